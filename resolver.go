package viperkv

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/grammar"
	"github.com/viperkv/viperkv/internal/suggest"
	"github.com/viperkv/viperkv/internal/viperlayers"
)

// The resolver turns settings into a configuration: it scans the values of a Viper's keys
// for references (scanView), fetches the secrets through the driver (fetchSecrets, in
// fetch.go), and builds the resolved view: a clone of the app's Viper (every layer and
// option kept) in which each value is put in the layer its reference came from, by
// internal/viperlayers (the file, the defaults, Set, a flag, or, for the environment, a flag
// of the view's own, which Viper ranks just above it). So every key answers as the app's
// Viper would, the references aside.

// scan is what one pass over the settings found: the strings that hold references, by
// config key, the keys whose references are malformed, and environment variables holding
// references that no key reads.
type scan struct {
	templates map[string]template
	invalid   map[string]*ReferenceError
	warnings  []ReferenceStatus
	roots     map[string]string    // each key of templates and invalid: the Viper key whose value holds it
	delim     string               // the Viper's key delimiter
	read      map[string]bool      // every string holding a reference that some key reads
	imported  map[string]Reference // the keys a vault source gives, and their secrets
}

// snapshot is one resolved configuration. It is never modified after it is published, so
// readers need no lock; an update publishes a new snapshot in one atomic step.
type snapshot struct {
	base     *viper.Viper // the settings as read, references unresolved; never written
	scan     *scan
	v        *viper.Viper    // the resolved view
	rendered map[string]any  // resolved value of each key holding references (a string, or what a shape gives)
	kept     map[string]bool // keys whose value is a last good one kept through a failure
	status   []ReferenceStatus
	secrets  map[Reference]*secret
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

// scanView finds every reference in the values of keys in base. Strings without '@' cost
// one IndexByte. The keys of imported hold placeholders: each stands for its secret as a
// whole value, without being parsed.
func scanView(base *viper.Viper, keys []string, pc parseConfig, imported map[string]Reference) *scan {
	delim := *viperlayers.Of(base).KeyDelim
	sc := &scan{templates: map[string]template{}, invalid: map[string]*ReferenceError{}, roots: map[string]string{},
		delim: delim, read: map[string]bool{}, imported: imported}
	for _, root := range keys {
		viperlayers.Walk(root, base.Get(root), delim, func(key, s string) {
			if r, ok := imported[key]; ok {
				sc.templates[key], sc.roots[key] = template{Parts: []grammar.Part{{Ref: (*grammar.Ref)(&r), Text: r.String()}}}, root
				return
			}
			t, err := parseTemplate(key, s, pc)
			var re *ReferenceError
			switch {
			case errors.As(err, &re):
				sc.invalid[key], sc.roots[key] = re, root
			case err != nil:
				sc.invalid[key], sc.roots[key] = &ReferenceError{Key: key, Status: StatusInvalidSyntax, Reason: err.Error()}, root
			case t.NeedsRender():
				sc.templates[key], sc.roots[key] = t, root
			}
			if HasReference(s) {
				sc.read[s] = true
			}
		})
	}
	return sc
}

// build puts the secrets in a clone of base, each in the layer its reference came from,
// and makes a snapshot. A key whose references cannot all be rendered keeps its value from
// prev, if prev had one: a good value is never replaced by nothing; else it is left out.
func build(base *viper.Viper, sc *scan, secrets map[Reference]*secret, prev *snapshot) *snapshot {
	r := grammar.NewRenderer(func(ref grammar.Ref) (string, string, bool) {
		s, ok := secrets[Reference(ref).key()]
		if !ok || !s.has {
			return "", "", false
		}
		return s.value, s.version, true
	})
	rendered := map[string]any{}
	kept := map[string]bool{}
	value := func(key, s string) (any, bool) {
		t, isRef := sc.templates[key]
		_, bad := sc.invalid[key]
		if !isRef && !bad {
			return s, true
		}
		if isRef {
			if v, ok := r.Render(key, t); ok {
				rendered[key] = v
				return v, true
			}
		}
		if prev != nil {
			if v, ok := prev.rendered[key]; ok {
				rendered[key], kept[key] = v, true
				return viperlayers.Copy(v), true
			}
		}
		return nil, false
	}
	v := sc.view(base, value)

	var status []ReferenceStatus
	for _, key := range sc.keys() {
		if re, bad := sc.invalid[key]; bad {
			status = append(status, ReferenceStatus{Key: key, Written: re.Written, Status: re.Status, Reason: re.Reason})
			continue
		}
		t := sc.templates[key]
		texts := t.Written()
		for i, p := range t.RefParts() {
			ref := Reference(*p.Ref)
			st := ReferenceStatus{Key: key, Written: texts[i], Reference: ref, Status: StatusInitialized, Optional: p.Shape.Optional}
			if s, ok := secrets[ref.key()]; ok {
				st.Status, st.Reason, st.Took = s.status, s.reason, s.took
				if s.has {
					st.Version, st.ContentType, st.Certificate = s.version, s.contentType, s.cert
					st.ServedBy = cmp.Or(s.servedBy, ref.Vault)
				}
			}
			if se := r.Failed(key, i); se != nil {
				st.Status, st.Reason = Status(se.Status), se.Reason
			}
			status = append(status, st)
		}
	}
	status = append(status, sc.warnings...)
	return &snapshot{base: base, scan: sc, v: v, rendered: rendered, kept: kept, status: status, secrets: secrets}
}

// view returns a clone of base with the strings of every key holding references rendered by
// value, in the layers they came from, and the environment's references hidden.
func (sc *scan) view(base *viper.Viper, value func(key, s string) (any, bool)) *viper.Viper {
	v := viperlayers.Clone(base)
	roots := map[string]bool{}
	for _, root := range sc.roots {
		roots[root] = true
	}
	for _, root := range slices.Sorted(maps.Keys(roots)) {
		viperlayers.Place(v, root, viperlayers.Source(base, root), value)
	}
	viperlayers.HideEnv(v, HasReference) // no raw reference is read from the environment
	return v
}

// masked returns the resolved settings with Mask in place of every secret value; keys that
// failed are absent.
func (s *snapshot) masked() map[string]any {
	v := s.scan.view(s.base, func(key, str string) (any, bool) {
		t, isRef := s.scan.templates[key]
		_, bad := s.scan.invalid[key]
		val, ok := s.rendered[key]
		switch {
		case !isRef && !bad:
			return str, true
		case !ok:
			return nil, false
		case s.kept[key]:
			return maskTree(val), true
		}
		if _, text := val.(string); !text {
			return maskTree(val), true // a shaped whole value: each leaf masked
		}
		return t.Render(func(grammar.Ref) (string, bool) { return Mask, true })
	})
	return v.AllSettings()
}

// maskTree returns v with Mask for every leaf: a subtree keeps its shape, so its keys still
// show.
func maskTree(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = maskTree(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = maskTree(e)
		}
		return out
	}
	return Mask
}

// unnamedEnvRefs finds environment variables under v's prefix that hold a reference no
// configuration key reads: with AutomaticEnv, Viper does not list env-only keys, so the
// reference would silently go unresolved (and the key read as ""). Each becomes a
// StatusEnvKeyNotNamed row saying how to fix it.
func unnamedEnvRefs(v *viper.Viper, read map[string]bool, pc parseConfig) []ReferenceStatus {
	prefix := v.GetEnvPrefix()
	if prefix == "" {
		return nil // without a prefix, no variable can be told to be this app's
	}
	prefix = strings.ToUpper(prefix) + "_"
	delim := *viperlayers.Of(v).KeyDelim
	var out []ReferenceStatus
	var keys []string // the configuration's keys, listed once for the first variable that needs them
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
		for _, cand := range []string{strings.ReplaceAll(rest, "_", delim), rest} {
			if got, ok := v.Get(cand).(string); ok && got == value {
				key = cand
				break
			}
		}
		if key == "" {
			key = strings.ReplaceAll(rest, "_", delim)
		}
		reason := fmt.Sprintf("environment variable %s holds a reference, but Viper lists no key that reads it "+
			"(AutomaticEnv keys are not listed): name the key %s (WithEnvKeys(%q) in Go, --env-key %s with the viperkv command)",
			name, key, key, key)
		if keys == nil {
			keys = v.AllKeys()
		}
		// A misspelled variable (APP_DATABSE_CONN) names a key the configuration lacks.
		if near := suggest.Nearest(key, keys, 2); near != "" {
			reason += fmt.Sprintf("; or, if the variable is misspelled, it may be meant for the key %s", near)
		}
		st := ReferenceStatus{Key: key, Status: StatusEnvKeyNotNamed, Reason: reason}
		if t, err := parseTemplate(key, value, pc); err == nil && t.HasRefs() {
			st.Reference, st.Written = refsOf(t)[0], t.Written()[0]
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
		for _, r := range refsOf(sc.templates[k]) {
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
