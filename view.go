package viperkv

import (
	"os"
	"strconv"
	"strings"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/viperlayers"
)

// The resolved view is a clone of the app's Viper (every layer and option kept) in which
// each resolved value is put in the layer its reference came from: the config file, the
// defaults, Set, a flag, or (for the environment, which a Viper reads when asked) a flag
// of its own, which Viper ranks just above the environment. So every key answers as the
// app's Viper would, the references aside.

// layer names where a key's value comes from, in Viper's order.
type layer int

const (
	layerNone layer = iota
	layerOverride
	layerFlag
	layerEnv
	layerConfig
	layerKVStore
	layerDefault
	layerFlagDefault
)

// sourceOf returns the layer key's value comes from in v: the first layer that answers it
// alone, in Viper's order, asked through Viper's own lookup (aliases, nested paths, map
// keys holding the delimiter and list indexes included).
func sourceOf(v *viper.Viper, key string) layer {
	answers := func(keep func(p viperlayers.Layers)) bool {
		p := new(viper.Viper)
		*p = *v // a probe: only its own fields are set below; no map of v is written
		l := viperlayers.Of(p)
		*l.Override, *l.Config, *l.KVStore, *l.Defaults = nil, nil, nil, nil
		*l.PFlags, *l.Env, *l.AutomaticEnv = nil, nil, false
		keep(l)
		return p.Get(key) != nil
	}
	from := viperlayers.Of(v)
	changed := func() map[string]viper.FlagValue {
		out := map[string]viper.FlagValue{}
		for k, f := range *from.PFlags {
			if f.HasChanged() {
				out[k] = f
			}
		}
		return out
	}
	switch {
	case answers(func(l viperlayers.Layers) { *l.Override = *from.Override }):
		return layerOverride
	case answers(func(l viperlayers.Layers) { *l.PFlags = changed() }):
		return layerFlag
	case answers(func(l viperlayers.Layers) { *l.Env, *l.AutomaticEnv = *from.Env, *from.AutomaticEnv }):
		return layerEnv
	case answers(func(l viperlayers.Layers) { *l.Config = *from.Config }):
		return layerConfig
	case answers(func(l viperlayers.Layers) { *l.KVStore = *from.KVStore }):
		return layerKVStore
	case answers(func(l viperlayers.Layers) { *l.Defaults = *from.Defaults }):
		return layerDefault
	case answers(func(l viperlayers.Layers) { *l.PFlags = *from.PFlags }):
		return layerFlagDefault
	}
	return layerNone
}

// place puts the value of key root (as Viper names it) in v's layer from: render gives the
// new string of each string in it, by its key (the root, root[i] in a list, root.x in a map
// in a list), or false to leave the root out. A root left out is removed from every layer,
// so that no lower layer answers in its place.
func place(v *viper.Viper, root string, from layer, render func(key, s string) (string, bool)) {
	l := viperlayers.Of(v)
	delim := *l.KeyDelim
	put := func(m map[string]any) {
		if _, dropped := substitute(m, "", delim, root, render); dropped {
			remove(v, root)
		}
	}
	switch from {
	case layerOverride:
		put(*l.Override)
	case layerConfig:
		put(*l.Config)
	case layerKVStore:
		put(*l.KVStore)
	case layerDefault:
		put(*l.Defaults)
	case layerFlag, layerFlagDefault:
		f := (*l.PFlags)[root]
		if f == nil {
			return
		}
		if s, ok := renderFlag(f, root, render); ok {
			(*l.PFlags)[root] = viperlayers.Flag{FlagName: f.Name(), Value: s, Type: f.ValueType(), Changed: f.HasChanged()}
		} else {
			remove(v, root)
		}
	case layerEnv:
		raw, _ := v.Get(root).(string)
		if s, ok := render(root, raw); ok {
			// A flag of its own: Viper ranks flags just above the environment.
			(*l.PFlags)[root] = viperlayers.Flag{FlagName: root, Value: s, Type: "string", Changed: true}
		} else {
			remove(v, root)
		}
	}
}

// renderFlag renders a flag's value: a string, or each element of a list flag.
func renderFlag(f viper.FlagValue, root string, render func(key, s string) (string, bool)) (string, bool) {
	switch f.ValueType() {
	case "stringSlice", "stringArray":
		elems := strings.Split(strings.TrimSuffix(strings.TrimPrefix(f.ValueString(), "["), "]"), ",")
		for i, e := range elems {
			s, ok := render(root+"["+strconv.Itoa(i)+"]", e)
			if !ok {
				return "", false
			}
			elems[i] = s
		}
		return "[" + strings.Join(elems, ",") + "]", true
	}
	return render(root, f.ValueString())
}

// substitute finds the value of root in m (a layer's tree under key prefix, whose map keys
// may hold the delimiter themselves) and renders its strings in place. It reports whether
// it found root, and whether render left it out (a list is left out whole when one of its
// elements is).
func substitute(m map[string]any, prefix, delim, root string, render func(key, s string) (string, bool)) (found, dropped bool) {
	rest := root
	if prefix != "" {
		var ok bool
		if rest, ok = strings.CutPrefix(root, prefix+delim); !ok {
			return false, false
		}
	}
	// The map key is rest itself or one of its prefixes that ends before a delimiter,
	// longest first, as Viper looks it up.
	for end := len(rest); end > 0; {
		k := rest[:end]
		if val, ok := m[k]; ok {
			key := root[:len(root)-len(rest)+end]
			if end == len(rest) {
				nv, ok := renderValue(key, val, delim, render)
				if !ok {
					delete(m, k)
					return true, true
				}
				m[k] = nv
				return true, false
			}
			if sub, isMap := val.(map[string]any); isMap {
				if f, d := substitute(sub, key, delim, root, render); f {
					return f, d
				}
			}
		}
		end = strings.LastIndex(rest[:end], delim)
	}
	return false, false
}

// renderValue renders the strings of val, the value of key: a string, a list's elements
// (key[i]), a map's values in a list (key[i] + delim + name).
func renderValue(key string, val any, delim string, render func(key, s string) (string, bool)) (any, bool) {
	switch x := val.(type) {
	case string:
		return render(key, x)
	case []any:
		for i, e := range x {
			nv, ok := renderValue(key+"["+strconv.Itoa(i)+"]", e, delim, render)
			if !ok {
				return nil, false
			}
			x[i] = nv
		}
		return x, true
	case []string:
		for i, e := range x {
			s, ok := render(key+"["+strconv.Itoa(i)+"]", e)
			if !ok {
				return nil, false
			}
			x[i] = s
		}
		return x, true
	case map[string]any:
		for k, e := range x {
			nv, ok := renderValue(key+delim+k, e, delim, render)
			if !ok {
				delete(x, k)
				continue
			}
			x[k] = nv
		}
		return x, true
	}
	return val, true
}

// remove takes key out of every layer of v.
func remove(v *viper.Viper, key string) {
	l := viperlayers.Of(v)
	delim := *l.KeyDelim
	drop := func(string, string) (string, bool) { return "", false }
	for _, m := range []map[string]any{*l.Override, *l.Config, *l.KVStore, *l.Defaults} {
		substitute(m, "", delim, key, drop)
	}
	delete(*l.PFlags, key)
	delete(*l.Env, key)
}

// walkValues calls fn with every string of val, the value of key, by its key: a string,
// a list's elements (key[i]), the values of a map (key + delim + name).
func walkValues(key string, val any, delim string, fn func(key, s string)) {
	switch x := val.(type) {
	case string:
		fn(key, x)
	case []any:
		for i, e := range x {
			walkValues(key+"["+strconv.Itoa(i)+"]", e, delim, fn)
		}
	case []string:
		for i, e := range x {
			fn(key+"["+strconv.Itoa(i)+"]", e)
		}
	case map[string]any:
		for k, e := range x {
			walkValues(key+delim+k, e, delim, fn)
		}
	case map[string]string:
		for k, e := range x {
			fn(key+delim+k, e)
		}
	}
}

// hideReferences is the resolved view's environment key replacer: a variable whose value
// holds a reference is not seen (its resolved value is in a flag of the view's own, or the
// key is left out), so no raw reference is ever read from the environment.
type hideReferences struct{ next viper.StringReplacer }

// hidden is a variable name no environment holds.
const hidden = "\x00viperkv-hidden"

// Replace implements viper.StringReplacer.
func (h hideReferences) Replace(name string) string {
	if h.next != nil {
		name = h.next.Replace(name)
	}
	if val, ok := os.LookupEnv(name); ok && HasReference(val) {
		return hidden
	}
	return name
}
