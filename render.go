package viperkv

import (
	"strconv"
	"strings"

	"github.com/viperkv/viperkv/internal/viperlayers"
)

// renderer renders keys' templates from the secrets of one build, giving each reference
// the shape it asks for. A secret's document is parsed once per build however many
// references read properties of it.
type renderer struct {
	secrets map[Reference]*secret
	docs    map[docKey]parsedDoc
	// failed holds, by key and reference, the references whose secret was fetched but
	// whose value does not have the shape asked for.
	failed map[refAt]*shapeError
}

type docKey struct {
	ref             Reference // as key() gives it
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

func newRenderer(secrets map[Reference]*secret) *renderer {
	return &renderer{secrets: secrets, docs: map[docKey]parsedDoc{}, failed: map[refAt]*shapeError{}}
}

// refParts returns the parts that are references, in order.
func (t template) refParts() []part {
	var out []part
	for _, p := range t.parts {
		if p.ref != nil {
			out = append(out, p)
		}
	}
	return out
}

// render returns key's value: its template with every reference's value in its shape. A
// reference that is a whole value may give a subtree, bytes, a number or a boolean; inside
// text it must give a string, a number or a boolean. It reports false when a secret has no
// value or a value is not of its shape (recorded in r.failed).
func (r *renderer) render(key string, t template) (any, bool) {
	if len(t.parts) == 1 && t.parts[0].ref != nil {
		return r.value(key, 0, t.parts[0])
	}
	var b strings.Builder
	i := 0
	for _, p := range t.parts {
		if p.ref == nil {
			b.WriteString(p.lit)
			continue
		}
		v, ok := r.value(key, i, p)
		if !ok {
			return nil, false
		}
		s, ok := asText(v)
		if !ok {
			r.failed[refAt{key, i}] = &shapeError{StatusSecretFormatInvalid, "Property " + quoteProperty(p.shape.property) +
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
func (r *renderer) value(key string, i int, p part) (any, bool) {
	s, ok := r.secrets[p.ref.key()]
	if !ok || !s.has {
		return nil, false
	}
	if p.shape.plain() {
		return s.value, true
	}
	v, se := p.shape.apply(s.value, func(format string) (any, error) {
		k := docKey{p.ref.key(), s.version, format}
		d, ok := r.docs[k]
		if !ok {
			d.v, d.err = parseDocument(format, s.value)
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
