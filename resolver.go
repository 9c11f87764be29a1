package viperkv

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/viper"
)

// scan is what one pass over the settings found: the strings that hold references, by
// config key, and the keys whose references are malformed.
type scan struct {
	templates map[string]template
	invalid   map[string]*ReferenceError
}

// settingsOf returns a deep copy of the Viper's merged settings (files, env, defaults,
// overrides) with the env-only keys the caller named added. The copy is private to the
// provider: the snapshot built from it never shares a map or slice with v.
func settingsOf(v *viper.Viper, envKeys []string) map[string]any {
	tree := v.AllSettings()
	for _, k := range envKeys {
		if val := v.Get(k); val != nil {
			setPath(tree, strings.Split(strings.ToLower(k), "."), val)
		}
	}
	return tree
}

func setPath(tree map[string]any, path []string, val any) {
	for _, p := range path[:len(path)-1] {
		next, ok := tree[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			tree[p] = next
		}
		tree = next
	}
	tree[path[len(path)-1]] = val
}

// scanSettings finds every reference in the tree. Strings without '@' cost one IndexByte.
func scanSettings(tree map[string]any, pc parseConfig) *scan {
	sc := &scan{templates: map[string]template{}, invalid: map[string]*ReferenceError{}}
	transform("", tree, func(key, s string) (string, bool) {
		t, err := parseTemplate(key, s, pc)
		var re *ReferenceError
		switch {
		case errors.As(err, &re):
			sc.invalid[key] = re
		case err != nil:
			sc.invalid[key] = &ReferenceError{Key: key, Status: StatusInvalidSyntax, Reason: err.Error()}
		case t.needsRender():
			sc.templates[key] = t
		}
		return s, true
	})
	return sc
}

// distinct lists each secret once, however many keys reference it.
func (sc *scan) distinct() []Reference {
	seen := map[Reference]bool{}
	var out []Reference
	for _, k := range sc.keys() {
		for _, r := range sc.templates[k].refs() {
			if k := r.key(); !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// keys returns the keys holding references, valid or not, in a stable order.
func (sc *scan) keys() []string {
	keys := make([]string, 0, len(sc.templates)+len(sc.invalid))
	for k := range sc.templates {
		keys = append(keys, k)
	}
	for k := range sc.invalid {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// transform deep-copies v, passing every string through fn with its config key. Map entries
// for which fn reports false are dropped; a list with such an element is dropped whole.
func transform(key string, v any, fn func(key, s string) (string, bool)) (any, bool) {
	join := func(k string) string {
		if key == "" {
			return k
		}
		return key + "." + k
	}
	switch x := v.(type) {
	case string:
		return fn(key, x)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			if nv, ok := transform(join(k), e, fn); ok {
				m[k] = nv
			}
		}
		return m, true
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, e := range x {
			if nv, ok := fn(join(k), e); ok {
				m[k] = nv
			}
		}
		return m, true
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			nv, ok := transform(key+"["+strconv.Itoa(i)+"]", e, fn)
			if !ok {
				return nil, false
			}
			l[i] = nv
		}
		return l, true
	case []string:
		l := make([]string, len(x))
		for i, e := range x {
			nv, ok := fn(key+"["+strconv.Itoa(i)+"]", e)
			if !ok {
				return nil, false
			}
			l[i] = nv
		}
		return l, true
	case []map[string]any:
		l := make([]map[string]any, len(x))
		for i, e := range x {
			nv, _ := transform(key+"["+strconv.Itoa(i)+"]", e, fn)
			l[i] = nv.(map[string]any)
		}
		return l, true
	}
	return v, true
}
