package grammar

import (
	"strconv"
	"strings"

	"github.com/viperkv/viperkv/internal/viperlayers"
)

// Lookup gives a reference's secret value and its version; ok is false when the secret
// has no value.
type Lookup func(Ref) (value, version string, ok bool)

// Renderer renders keys' templates from the secrets of one build, giving each reference
// the shape it asks for. A secret's document is parsed once per build however many
// references read properties of it.
type Renderer struct {
	lookup Lookup
	docs   map[docKey]parsedDoc
	// failed holds, by key and reference, the references whose secret was fetched but
	// whose value does not have the shape asked for.
	failed map[refAt]*ShapeError
}

type docKey struct {
	ref             Ref // the name lowercased: Key Vault's names are case-insensitive
	version, format string
}

type parsedDoc struct {
	v   any
	err error
}

// refAt names the i-th reference of a key's value.
type refAt struct {
	key string
	i   int
}

// NewRenderer returns a Renderer of the secrets lookup gives.
func NewRenderer(lookup Lookup) *Renderer {
	return &Renderer{lookup: lookup, docs: map[docKey]parsedDoc{}, failed: map[refAt]*ShapeError{}}
}

// Failed returns why the i-th reference of key's value did not render though its secret
// has a value (its value is not of the shape asked for), or nil.
func (r *Renderer) Failed(key string, i int) *ShapeError { return r.failed[refAt{key, i}] }

// RefParts returns the parts that are references, in order.
func (t Template) RefParts() []Part {
	var out []Part
	for _, p := range t.Parts {
		if p.Ref != nil {
			out = append(out, p)
		}
	}
	return out
}

// Render returns key's value: its template with every reference's value in its shape. A
// reference that is a whole value may give a subtree, bytes, a number or a boolean; inside
// text it must give a string, a number or a boolean. It reports false when a secret has no
// value or a value is not of its shape (see Failed).
func (r *Renderer) Render(key string, t Template) (any, bool) {
	if len(t.Parts) == 1 && t.Parts[0].Ref != nil {
		return r.value(key, 0, t.Parts[0])
	}
	var b strings.Builder
	i := 0
	for _, p := range t.Parts {
		if p.Ref == nil {
			b.WriteString(p.Lit)
			continue
		}
		v, ok := r.value(key, i, p)
		if !ok {
			return nil, false
		}
		s, ok := asText(v)
		if !ok {
			r.failed[refAt{key, i}] = &ShapeError{Status: SecretFormatInvalid, Reason: "Property " + quoteProperty(p.Shape.Property) +
				" points at a " + kindOf(v) + ", which cannot be part of a text: point at a string, number or boolean, or make the reference the whole value"}
			return nil, false
		}
		b.WriteString(s)
		i++
	}
	return b.String(), true
}

// value is the i-th reference's value in its shape. Subtrees are copies: the parsed
// document is shared by the references of one build.
func (r *Renderer) value(key string, i int, p Part) (any, bool) {
	value, version, ok := r.lookup(*p.Ref)
	if !ok {
		return nil, false
	}
	if p.Shape.Plain() {
		return value, true
	}
	v, se := p.Shape.Apply(value, func(format string) (any, error) {
		k := docKey{Ref{p.Ref.Vault, LowerASCII(p.Ref.Name), p.Ref.Version}, version, format}
		d, ok := r.docs[k]
		if !ok {
			d.v, d.err = parseDocument(format, value)
			r.docs[k] = d
		}
		return d.v, d.err
	})
	if se != nil {
		r.failed[refAt{key, i}] = se
		return nil, false
	}
	return viperlayers.Copy(v), true
}

// asText gives a scalar as the text a configuration file would hold.
func asText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int:
		return strconv.Itoa(x), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

func quoteProperty(p string) string {
	if p == "" {
		return "(none)"
	}
	return strconv.Quote(p)
}
