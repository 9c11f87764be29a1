package viperkv

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/viper"
)

// The resolver turns settings into a configuration: it scans the settings for
// references (scanSettings), fetches the secrets through the source (fetchSecrets, in
// source.go), and substitutes them (build).

// scan is what one pass over the settings found: the strings that hold references, by
// config key, the keys whose references are malformed, and environment variables holding
// references that no key reads.
type scan struct {
	templates map[string]template
	invalid   map[string]*ReferenceError
	warnings  []ReferenceStatus
}

// snapshot is one resolved configuration. It is never modified after it is published, so
// readers need no lock; an update publishes a new snapshot in one atomic step.
type snapshot struct {
	tree     map[string]any // the settings as read, references unresolved
	scan     *scan
	v        *viper.Viper
	masked   map[string]any
	rendered map[string]string // resolved value of each key holding references
	status   []ReferenceStatus
	secrets  map[Reference]*secret
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
// The keys of imported hold placeholders: each stands for its secret as a whole value,
// without being parsed.
func scanSettings(tree map[string]any, pc parseConfig, imported map[string]Reference) *scan {
	sc := &scan{templates: map[string]template{}, invalid: map[string]*ReferenceError{}}
	transform("", tree, func(key, s string) (string, bool) {
		if r, ok := imported[key]; ok {
			sc.templates[key] = template{parts: []part{{ref: &r, text: r.String()}}}
			return s, true
		}
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

// build substitutes the secrets into the settings and makes a snapshot. A key whose
// references cannot all be rendered keeps its value from prev, if prev had one: a good
// value is never replaced by nothing.
func build(tree map[string]any, sc *scan, secrets map[Reference]*secret, prev *snapshot) *snapshot {
	lookup := func(r Reference) (string, bool) {
		s, ok := secrets[r.key()]
		if !ok || !s.has {
			return "", false
		}
		return s.value, true
	}
	rendered := map[string]string{}
	kept := map[string]bool{}
	values, _ := transform("", tree, func(key, s string) (string, bool) {
		t, isRef := sc.templates[key]
		_, bad := sc.invalid[key]
		if !isRef && !bad {
			return s, true
		}
		if isRef {
			if v, ok := t.render(lookup); ok {
				rendered[key] = v
				return v, true
			}
		}
		if prev != nil {
			if v, ok := prev.rendered[key]; ok {
				rendered[key], kept[key] = v, true
				return v, true
			}
		}
		return "", false
	})
	masked, _ := transform("", tree, func(key, s string) (string, bool) {
		t, isRef := sc.templates[key]
		_, bad := sc.invalid[key]
		switch _, ok := rendered[key]; {
		case !isRef && !bad:
			return s, true
		case !ok:
			return "", false
		case kept[key]:
			return Mask, true
		}
		return t.render(func(Reference) (string, bool) { return Mask, true })
	})
	v := viper.New()
	// MergeConfigMap fails only for values it cannot copy; transform's output is plain maps.
	_ = v.MergeConfigMap(values.(map[string]any))

	var status []ReferenceStatus
	for _, key := range sc.keys() {
		if re, bad := sc.invalid[key]; bad {
			status = append(status, ReferenceStatus{Key: key, Written: re.Written, Status: re.Status, Reason: re.Reason})
			continue
		}
		t := sc.templates[key]
		texts := t.written()
		for i, r := range t.refs() {
			st := ReferenceStatus{Key: key, Written: texts[i], Reference: r, Status: StatusInitialized}
			if s, ok := secrets[r.key()]; ok {
				st.Status, st.Reason, st.Took = s.status, s.reason, s.took
				if s.has {
					st.Version, st.ContentType = s.version, s.contentType
				}
			}
			status = append(status, st)
		}
	}
	status = append(status, sc.warnings...)
	return &snapshot{tree: tree, scan: sc, v: v, masked: masked.(map[string]any), rendered: rendered, status: status, secrets: secrets}
}

// unnamedEnvRefs finds environment variables under v's prefix that hold a reference no
// configuration key reads: with AutomaticEnv, Viper does not list env-only keys, so the
// reference would silently go unresolved (and the key read as ""). Each becomes a
// StatusEnvKeyNotNamed row saying how to fix it.
func unnamedEnvRefs(v *viper.Viper, tree map[string]any, pc parseConfig) []ReferenceStatus {
	prefix := v.GetEnvPrefix()
	if prefix == "" {
		return nil // without a prefix, no variable can be told to be this app's
	}
	prefix = strings.ToUpper(prefix) + "_"
	read := map[string]bool{} // every string some key holds: a variable bound to a key is read
	transform("", tree, func(_, s string) (string, bool) {
		if HasReference(s) {
			read[s] = true
		}
		return s, true
	})
	var out []ReferenceStatus
	for _, kv := range os.Environ() {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !HasReference(value) || read[value] || !strings.HasPrefix(strings.ToUpper(name), prefix) {
			continue
		}
		rest := strings.ToLower(name[len(prefix):])
		if rest == "" {
			continue
		}
		// Viper maps a key to a variable through the prefix and its key replacer, which
		// cannot be inverted: try the usual spellings, and keep one Viper would read.
		key := ""
		for _, cand := range []string{strings.ReplaceAll(rest, "_", "."), rest} {
			if got, ok := v.Get(cand).(string); ok && got == value {
				key = cand
				break
			}
		}
		if key == "" {
			key = strings.ReplaceAll(rest, "_", ".")
		}
		st := ReferenceStatus{Key: key, Status: StatusEnvKeyNotNamed,
			Reason: fmt.Sprintf("environment variable %s holds a reference, but Viper lists no key that reads it "+
				"(AutomaticEnv keys are not listed): name the key with viperkv.WithEnvKeys(%q)", name, key)}
		if t, err := parseTemplate(key, value, pc); err == nil && t.hasRefs() {
			st.Reference, st.Written = t.refs()[0], t.written()[0]
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ReferenceStatus) int { return strings.Compare(a.Key, b.Key) })
	return out
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
