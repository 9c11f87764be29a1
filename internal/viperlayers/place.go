package viperlayers

import (
	"os"
	"strconv"
	"strings"

	"github.com/spf13/viper"
)

// Placing values in a clone's layers: each value goes in the layer it came from, so every
// key answers as the original's does. For the environment, which a Viper reads only when
// asked, a flag of the clone's own stands in: Viper ranks flags just above the environment.

// Layer names where a key's value comes from, in Viper's order.
type Layer int

const (
	LayerNone Layer = iota
	LayerOverride
	LayerFlag
	LayerEnv
	LayerConfig
	LayerKVStore
	LayerDefault
	LayerFlagDefault
)

// Source returns the layer key's value comes from in v: the first layer that answers it
// alone, in Viper's order, asked through Viper's own lookup (aliases, nested paths, map
// keys holding the delimiter and list indexes included).
func Source(v *viper.Viper, key string) Layer {
	answers := func(keep func(p Layers)) bool {
		p := new(viper.Viper)
		*p = *v // a probe: only its own fields are set below; no map of v is written
		l := Of(p)
		*l.Override, *l.Config, *l.KVStore, *l.Defaults = nil, nil, nil, nil
		*l.PFlags, *l.Env, *l.AutomaticEnv = nil, nil, false
		keep(l)
		return p.Get(key) != nil
	}
	from := Of(v)
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
	case answers(func(l Layers) { *l.Override = *from.Override }):
		return LayerOverride
	case answers(func(l Layers) { *l.PFlags = changed() }):
		return LayerFlag
	case answers(func(l Layers) { *l.Env, *l.AutomaticEnv = *from.Env, *from.AutomaticEnv }):
		return LayerEnv
	case answers(func(l Layers) { *l.Config = *from.Config }):
		return LayerConfig
	case answers(func(l Layers) { *l.KVStore = *from.KVStore }):
		return LayerKVStore
	case answers(func(l Layers) { *l.Defaults = *from.Defaults }):
		return LayerDefault
	case answers(func(l Layers) { *l.PFlags = *from.PFlags }):
		return LayerFlagDefault
	}
	return LayerNone
}

// Place puts the value of key root (as Viper names it) in v's layer from: render gives the
// new value of each string in it (a string, or a subtree, bytes or a number), by its key (the root, root[i] in a list, root.x in a map
// in a list), or false to leave the root out. A root left out is removed from every layer,
// so that no lower layer answers in its place.
func Place(v *viper.Viper, root string, from Layer, render func(key, s string) (any, bool)) {
	l := Of(v)
	delim := *l.KeyDelim
	put := func(m map[string]any) {
		if _, dropped := substitute(m, "", delim, root, render); dropped {
			Remove(v, root)
		}
	}
	switch from {
	case LayerOverride:
		put(*l.Override)
	case LayerConfig:
		put(*l.Config)
	case LayerKVStore:
		put(*l.KVStore)
	case LayerDefault:
		put(*l.Defaults)
	case LayerFlag, LayerFlagDefault:
		f := (*l.PFlags)[root]
		if f == nil {
			return
		}
		val, ok := renderFlag(f, root, render)
		s, isString := val.(string)
		switch {
		case !ok:
			Remove(v, root)
		case isString:
			(*l.PFlags)[root] = Flag{FlagName: f.Name(), Value: s, Type: f.ValueType(), Changed: f.HasChanged()}
		default:
			placeAbove(v, l, root, val)
		}
	case LayerEnv:
		raw, _ := v.Get(root).(string)
		val, ok := render(root, raw)
		s, isString := val.(string)
		switch {
		case !ok:
			Remove(v, root)
		case isString:
			// A flag of its own: Viper ranks flags just above the environment.
			(*l.PFlags)[root] = Flag{FlagName: root, Value: s, Type: "string", Changed: true}
		default:
			placeAbove(v, l, root, val)
		}
	}
}

// placeAbove puts a value that is not text (a subtree, bytes, a number), which a flag
// cannot hold, in the override layer at root. No layer above the one root came from holds
// root, so root and the keys under it answer as they would from that layer.
func placeAbove(v *viper.Viper, l Layers, root string, val any) {
	delete(*l.PFlags, root)
	delete(*l.Env, root)
	v.Set(root, val)
}

// renderFlag renders a flag's value: a string, or each element of a list flag, which must
// render to text.
func renderFlag(f viper.FlagValue, root string, render func(key, s string) (any, bool)) (any, bool) {
	switch f.ValueType() {
	case "stringSlice", "stringArray":
		elems := strings.Split(strings.TrimSuffix(strings.TrimPrefix(f.ValueString(), "["), "]"), ",")
		for i, e := range elems {
			val, ok := render(root+"["+strconv.Itoa(i)+"]", e)
			s, isString := val.(string)
			if !ok || !isString {
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
func substitute(m map[string]any, prefix, delim, root string, render func(key, s string) (any, bool)) (found, dropped bool) {
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
func renderValue(key string, val any, delim string, render func(key, s string) (any, bool)) (any, bool) {
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
		out := make([]any, len(x))
		allText := true
		for i, e := range x {
			val, ok := render(key+"["+strconv.Itoa(i)+"]", e)
			if !ok {
				return nil, false
			}
			out[i] = val
			_, isString := val.(string)
			allText = allText && isString
		}
		if !allText {
			return out, true // an element became a subtree or bytes: a list of any
		}
		for i, e := range out {
			x[i] = e.(string)
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

// Remove takes key out of every layer of v.
func Remove(v *viper.Viper, key string) {
	l := Of(v)
	delim := *l.KeyDelim
	drop := func(string, string) (any, bool) { return nil, false }
	for _, m := range []map[string]any{*l.Override, *l.Config, *l.KVStore, *l.Defaults} {
		substitute(m, "", delim, key, drop)
	}
	delete(*l.PFlags, key)
	delete(*l.Env, key)
}

// Walk calls fn with every string of val, the value of key, by its key: a string,
// a list's elements (key[i]), the values of a map (key + delim + name).
func Walk(key string, val any, delim string, fn func(key, s string)) {
	switch x := val.(type) {
	case string:
		fn(key, x)
	case []any:
		for i, e := range x {
			Walk(key+"["+strconv.Itoa(i)+"]", e, delim, fn)
		}
	case []string:
		for i, e := range x {
			fn(key+"["+strconv.Itoa(i)+"]", e)
		}
	case map[string]any:
		for k, e := range x {
			Walk(key+delim+k, e, delim, fn)
		}
	case map[string]string:
		for k, e := range x {
			fn(key+delim+k, e)
		}
	}
}

// HideEnv makes v see no environment variable whose value hide reports: it wraps v's
// environment key replacer, sending such a variable's name to one no environment holds.
func HideEnv(v *viper.Viper, hide func(value string) bool) {
	r := Of(v).Replacer
	*r = hidingReplacer{next: *r, hide: hide}
}

type hidingReplacer struct {
	next viper.StringReplacer
	hide func(string) bool
}

// hidden is a variable name no environment holds.
const hidden = "\x00viperkv-hidden"

// Replace implements viper.StringReplacer.
func (h hidingReplacer) Replace(name string) string {
	if h.next != nil {
		name = h.next.Replace(name)
	}
	if val, ok := os.LookupEnv(name); ok && h.hide(val) {
		return hidden
	}
	return name
}
