package grammar

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/viperkv/viperkv/internal/kvname"
)

// A reference's shape is what it asks of its secret's value beyond the value itself, in
// parameters only the @KeyVault(...) form takes:
//
//	Property=<JSON Pointer>   one value of a JSON (or YAML) secret, such as /db/password
//	Format=json|yaml          the secret is a document; alone, it becomes a subtree at the key
//	Decode=base64|base64url|hex  the value is bytes ([]byte through Unmarshal)
//	Optional=true|false       a missing, disabled or forbidden secret leaves the key out
//
// Property is a JSON Pointer (RFC 6901) rather than a dotted path: JSON keys often hold
// dots ("app.settings"), a pointer needs no escape for them (only ~0 for "~" and ~1 for
// "/"), it indexes arrays (/hosts/0), and it cannot be confused with Viper's own key
// delimiter.

// Shape holds a reference's Property, Format, Decode and Optional parameters.
type Shape struct {
	pointer  []string // Property's tokens, unescaped; nil when absent
	Property string   // Property as written, for statuses
	format   string   // "", "json" or "yaml"
	decode   string   // "", "base64", "base64url" or "hex"
	// Optional: a missing, disabled or forbidden secret leaves the key out.
	Optional bool
}

// Pointer returns Property's tokens, unescaped, or nil when there is no Property.
func (s Shape) Pointer() []string { return s.pointer }

// Format returns "json" or "yaml" when the secret is read as a document (a Property
// implies json), else "".
func (s Shape) Format() string { return s.format }

// Plain reports whether the value is substituted as it is.
func (s Shape) Plain() bool { return s.pointer == nil && s.format == "" && s.decode == "" }

// WholeValue reports whether the reference must make up its key's whole value: its result
// may be a subtree, a number or bytes, which no text can hold.
func (s Shape) WholeValue() bool { return s.decode != "" || (s.format != "" && s.pointer == nil) }

// parseShape reads Property, Format, Decode and Optional (in paramNames' order; "" when
// absent). It returns a reason when one is malformed.
func parseShape(val []string) (Shape, string) {
	property, format, decode, optional := val[0], val[1], val[2], val[3]
	var s Shape
	if property != "" {
		ptr, reason := parsePointer(property)
		if reason != "" {
			return Shape{}, reason
		}
		s.pointer, s.Property = ptr, property
		s.format = "json"
	}
	switch f := LowerASCII(format); f {
	case "":
	case "json", "yaml":
		s.format = f
	default:
		return Shape{}, fmt.Sprintf("Format %s is not json or yaml", kvname.Quote(format))
	}
	switch d := LowerASCII(decode); d {
	case "":
	case "base64", "base64url", "hex":
		s.decode = d
	default:
		return Shape{}, fmt.Sprintf("Decode %s is not base64, base64url or hex", kvname.Quote(decode))
	}
	if s.decode != "" && s.format != "" && s.pointer == nil {
		return Shape{}, "Decode needs a Property: a whole " + s.format + " document is a subtree, not bytes"
	}
	switch LowerASCII(optional) {
	case "", "false":
	case "true":
		s.Optional = true
	default:
		return Shape{}, fmt.Sprintf("Optional %s is not true or false", kvname.Quote(optional))
	}
	return s, ""
}

// parsePointer splits a JSON Pointer into its reference tokens, unescaped.
func parsePointer(p string) ([]string, string) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Sprintf("Property %s is not a JSON Pointer (want /name/name, such as /db/password)", kvname.Quote(p))
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 == len(t) || (t[j+1] != '0' && t[j+1] != '1')) {
				return nil, fmt.Sprintf("Property %s has a '~' not followed by 0 or 1 (write ~0 for '~' and ~1 for '/')", kvname.Quote(p))
			}
		}
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, ""
}

// ShapeError is a reference whose secret was fetched but whose value does not have the
// shape the reference asks for.
type ShapeError struct {
	Status Status
	Reason string
}

// Error formats the error as "<Status>: <Reason>".
func (e *ShapeError) Error() string { return string(e.Status) + ": " + e.Reason }

// Apply gives value the shape s asks for: a string, []byte, a number, a bool, or a
// subtree (map[string]any, []any) with Viper's lowercase keys. Reasons name the property,
// never a value. doc caches the parsed document across the references to one secret.
func (s Shape) Apply(value string, doc func(format string) (any, error)) (any, *ShapeError) {
	if s.Plain() {
		return value, nil
	}
	var out any = value
	if s.format != "" {
		d, err := doc(s.format)
		if err != nil {
			return nil, &ShapeError{SecretFormatInvalid, fmt.Sprintf("the secret is not a %s document: %v", strings.ToUpper(s.format), err)}
		}
		out = d
		if s.pointer != nil {
			v, why := lookupPointer(d, s.pointer)
			if why != "" {
				return nil, &ShapeError{PropertyNotFound, "Property " + kvname.Quote(s.Property) + ": " + why}
			}
			out = v
		}
	}
	if s.decode != "" {
		str, ok := out.(string)
		if !ok {
			return nil, &ShapeError{DecodeFailed, "Property " + kvname.Quote(s.Property) + " is not a string, so it cannot be decoded"}
		}
		b, err := decodeValue(s.decode, str)
		if err != nil {
			return nil, &ShapeError{DecodeFailed, "the value is not " + s.decode + ": " + err.Error()}
		}
		out = b
	}
	return out, nil
}

// lookupPointer follows a JSON Pointer's tokens into d. A null counts as missing: a key
// is left without a value rather than given an empty one.
func lookupPointer(d any, toks []string) (any, string) {
	cur := d
	for i, t := range toks {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[t]
			if !ok {
				// Viper's keys are lowercase (subtrees are kept so); a document's are not.
				v, ok = x[strings.ToLower(t)]
			}
			if !ok {
				return nil, "no member " + kvname.Quote(t) + pointerAt(toks, i)
			}
			cur = v
		case []any:
			n, err := strconv.Atoi(t)
			if err != nil || n < 0 || n >= len(x) || (len(t) > 1 && t[0] == '0') {
				return nil, fmt.Sprintf("no element %s in a list of %d%s", kvname.Quote(t), len(x), pointerAt(toks, i))
			}
			cur = x[n]
		default:
			return nil, "a " + kindOf(cur) + " has no member " + kvname.Quote(t) + pointerAt(toks, i)
		}
	}
	if cur == nil {
		return nil, "the value is null"
	}
	return cur, ""
}

func pointerAt(toks []string, i int) string {
	if i == 0 {
		return " at the top"
	}
	esc := make([]string, i)
	for j, t := range toks[:i] {
		esc[j] = strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
	}
	return " under " + kvname.Quote("/"+strings.Join(esc, "/"))
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int, int64, float64:
		return "number"
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	}
	return "value"
}

// parseDocument parses a secret as a JSON or YAML document into Viper's native types:
// maps with lowercase string keys (as Viper keeps a file's), lists, strings, booleans,
// int for whole numbers that fit and float64 for others. Errors name a position, never
// the text.
func parseDocument(format, value string) (any, error) {
	var d any
	switch format {
	case "json":
		dec := json.NewDecoder(strings.NewReader(value))
		dec.UseNumber()
		if err := dec.Decode(&d); err != nil {
			return nil, jsonProblem(err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, errors.New("text after the JSON value")
		}
	case "yaml":
		if err := yaml.Unmarshal([]byte(value), &d); err != nil {
			return nil, errors.New("YAML does not parse")
		}
	}
	return native(d)
}

// jsonProblem describes a JSON error by its kind and offset: encoding/json quotes the
// offending text in some errors, and that text is the secret.
func jsonProblem(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("JSON syntax error at byte %d", se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("JSON ends early")
	}
	return errors.New("JSON does not parse")
}

// native converts a decoded document to Viper's types.
func native(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := native(e)
			if err != nil {
				return nil, err
			}
			lk := strings.ToLower(k)
			if _, dup := out[lk]; dup {
				return nil, fmt.Errorf("members %s differ only in case (configuration keys ignore case)", kvname.Quote(k))
			}
			out[lk] = n
		}
		return out, nil
	case map[any]any: // YAML with keys that are not all strings
		out := make(map[string]any, len(x))
		for k, e := range x {
			m := map[string]any{fmt.Sprint(k): e}
			n, err := native(m)
			if err != nil {
				return nil, err
			}
			for nk, nv := range n.(map[string]any) {
				if _, dup := out[nk]; dup {
					return nil, fmt.Errorf("members %s differ only in case (configuration keys ignore case)", kvname.Quote(nk))
				}
				out[nk] = nv
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := native(e)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 0); err == nil {
			return int(i), nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, errors.New("a number out of range")
		}
		return f, nil
	}
	return v, nil
}

// decodeValue decodes s as enc says. Base64 may be wrapped over lines and its padding may
// be left out, as PEM bodies and JWT segments are.
func decodeValue(enc, s string) ([]byte, error) {
	switch enc {
	case "hex":
		b, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, errors.New("not hexadecimal digits in pairs")
		}
		return b, nil
	case "base64", "base64url":
		var compact bytes.Buffer
		for i := 0; i < len(s); i++ {
			if c := s[i]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
				compact.WriteByte(c)
			}
		}
		in := strings.TrimRight(compact.String(), "=")
		e := base64.RawStdEncoding
		if enc == "base64url" {
			e = base64.RawURLEncoding
		}
		b, err := e.DecodeString(in)
		if err != nil {
			var ce base64.CorruptInputError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("not %s at byte %d", enc, int64(ce))
			}
			return nil, errors.New("not " + enc)
		}
		return b, nil
	}
	return nil, errors.New("unknown encoding")
}
