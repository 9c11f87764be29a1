package viperlayers

import "reflect"

// The config layer's settings told apart from a config file's, and put together again: how
// a reload of the file keeps what merged files and readers added over it.

// Matches counts the leaves of file that config holds with the same value.
func Matches(config, file map[string]any) int {
	n := 0
	for k, fv := range file {
		cv, ok := config[k]
		if !ok {
			continue
		}
		fm, fIsMap := fv.(map[string]any)
		cm, cIsMap := cv.(map[string]any)
		switch {
		case fIsMap && cIsMap:
			n += Matches(cm, fm)
		case reflect.DeepEqual(fv, cv):
			n++
		}
	}
	return n
}

// Extra returns the settings of config that file does not give (absent from it, or with
// another value there).
func Extra(config, file map[string]any) map[string]any {
	out := map[string]any{}
	for k, cv := range config {
		fv, ok := file[k]
		if !ok {
			out[k] = Copy(cv)
			continue
		}
		cm, cIsMap := cv.(map[string]any)
		fm, fIsMap := fv.(map[string]any)
		switch {
		case cIsMap && fIsMap:
			if sub := Extra(cm, fm); len(sub) > 0 {
				out[k] = sub
			}
		case !reflect.DeepEqual(cv, fv):
			out[k] = Copy(cv)
		}
	}
	return out
}

// Merge merges src into dst (which it returns), src winning, maps merged level by
// level, as Viper's MergeConfigMap does.
func Merge(dst, src map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, sv := range src {
		sm, sIsMap := sv.(map[string]any)
		dm, dIsMap := dst[k].(map[string]any)
		if sIsMap && dIsMap {
			dst[k] = Merge(dm, sm)
			continue
		}
		dst[k] = sv
	}
	return dst
}

// Flatten returns m's leaves by their whole keys, joined with delim; an empty map is a leaf.
func Flatten(m map[string]any, delim string) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(prefix+k+delim, sub)
				continue
			}
			out[prefix+k] = v
		}
	}
	walk("", m)
	return out
}
