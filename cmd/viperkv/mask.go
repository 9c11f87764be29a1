package main

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/viperkv/viperkv/internal/reveal"
)

// concealed replaces each secret value in a child's output.
const concealed = "<concealed by viperkv>"

// secretSet is the set of values to conceal. It only grows: after a rotation the old
// values stay concealed too.
type secretSet struct {
	mu    sync.Mutex
	m     atomic.Pointer[matcher]
	short map[string]bool // secrets already warned about as too short to mask, by vault/name
}

// matcher finds secrets; it is immutable once built.
type matcher struct {
	all     map[string]bool
	byFirst [256][][]byte // candidates by first byte, longest first
}

// addSecrets adds the values of secrets (see add) and returns the names (vault/name) of
// those too short to conceal that it has not returned before, for run to warn about.
func (s *secretSet) addSecrets(secrets []reveal.Secret) (short []string) {
	values := make([]string, 0, len(secrets))
	s.mu.Lock()
	for _, sec := range secrets {
		values = append(values, sec.Value)
		if name := sec.Vault + "/" + sec.Name; tooShortToMask(sec.Value) && !s.short[name] {
			if s.short == nil {
				s.short = map[string]bool{}
			}
			s.short[name] = true
			short = append(short, name)
		}
	}
	s.mu.Unlock()
	s.add(values...)
	return short
}

// add adds values and every form of them that output may show (see secretForms). Values
// shorter than minMaskLen are ignored.
func (s *secretSet) add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	all := map[string]bool{}
	if old != nil {
		for v := range old.all {
			all[v] = true
		}
	}
	n := len(all)
	for _, v := range values {
		for _, f := range secretForms(v) {
			all[f] = true
		}
	}
	if old != nil && len(all) == n {
		return
	}
	m := &matcher{all: all}
	for v := range all {
		m.byFirst[v[0]] = append(m.byFirst[v[0]], []byte(v))
	}
	for i := range m.byFirst {
		slices.SortFunc(m.byFirst[i], func(a, b []byte) int {
			if len(a) != len(b) {
				return len(b) - len(a)
			}
			return bytes.Compare(a, b)
		})
	}
	s.m.Store(m)
}

// minMaskLen is the length (without surrounding blanks) a value, a form of it or a line of
// a multi-line value needs to be concealed. Concealing shorter ones ("10", "}") would
// conceal common text (port=8100 becoming port=8<concealed by viperkv>0) and give the
// value away by where the marks fall; run warns about such values instead, as CI systems
// do.
const minMaskLen = 6

// tooShortToMask reports whether v is below minMaskLen.
func tooShortToMask(v string) bool { return len(strings.TrimSpace(v)) < minMaskLen }

// secretForms returns v and each form of it that a child's output may show, so that
// masking the child's output conceals all of them:
//   - v as it is, trimmed of surrounding blanks, and with its blanks collapsed to single
//     spaces (what an unquoted echo $X prints);
//   - v as the CLI itself encodes it: JSON with and without Go's HTML-safe escapes (run
//     exports a list as JSON), quoted by each format resolve writes (YAML, TOML), in each
//     quoting style those formats choose for a longer string that holds v, and each of
//     these in the shell quoting of resolve --format env;
//   - for a multi-line v, and for each multi-line form, each line of at least minMaskLen
//     characters (without blanks), as it is and trimmed, so output that splits or
//     re-indents a certificate is still concealed.
//
// A v shorter than minMaskLen has no forms, and no form is shorter than that.
func secretForms(v string) []string {
	if tooShortToMask(v) {
		return nil
	}
	forms := []string{v, strings.TrimSpace(v), strings.Join(strings.Fields(v), " ")}
	forms = append(forms, encodedForms(v)...)
	for _, f := range forms {
		// The shell quoting of --format env, also around a list exported as JSON.
		if strings.Contains(f, "'") {
			forms = append(forms, strings.ReplaceAll(f, "'", `'\''`))
		}
	}
	out := forms
	for _, f := range forms {
		if !strings.ContainsAny(f, "\r\n") {
			continue
		}
		for _, line := range strings.FieldsFunc(f, func(r rune) bool { return r == '\r' || r == '\n' }) {
			out = append(out, line, strings.TrimSpace(line))
		}
	}
	return slices.DeleteFunc(out, tooShortToMask)
}

// encodedForms returns v as the CLI's own encoders write it inside a quoted string. Each
// format is asked for v alone and for v after a character that forces another quoting
// style (YAML: " " single quotes, "\x01" double quotes; TOML: "'" a basic string), since
// a secret inside a longer value is quoted the way the whole value needs.
func encodedForms(v string) []string {
	forms := []string{jsonForm(v, true), jsonForm(v, false)}
	for _, f := range []struct{ format, lead string }{
		{"yaml", ""}, {"yaml", " "}, {"yaml", "\x01"}, {"toml", ""}, {"toml", "'"},
	} {
		form, ok := scalarForm(f.lead+v, f.format)
		if !ok {
			continue
		}
		if f.lead != "" {
			lead, ok := scalarForm(f.lead, f.format)
			if !ok || !strings.HasPrefix(form, lead) {
				continue
			}
			form = form[len(lead):]
		}
		forms = append(forms, form)
	}
	return forms
}

// jsonForm returns v as a JSON string shows it, without the quotes.
func jsonForm(v string, escapeHTML bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(v) // a string always encodes
	return unquoteForm(strings.TrimSuffix(b.String(), "\n"))
}

// scalarForm returns v as resolve writes it in format, without the key and the quotes.
func scalarForm(v, format string) (string, bool) {
	var b strings.Builder
	if err := writeSettings(&b, map[string]any{"k": v}, format, ""); err != nil {
		return "", false
	}
	s := strings.TrimSuffix(b.String(), "\n")
	for _, key := range []string{"k: ", "k = ", "K="} {
		if rest, ok := strings.CutPrefix(s, key); ok {
			rest = strings.TrimPrefix(rest, "!!binary ") // YAML's form of invalid UTF-8
			return unquoteForm(rest), true
		}
	}
	return "", false
}

// unquoteForm strips the quotes around an encoded string: """, ”', " or '.
func unquoteForm(s string) string {
	for _, q := range []string{`"""`, `'''`, `"`, `'`} {
		if len(s) >= 2*len(q) && strings.HasPrefix(s, q) && strings.HasSuffix(s, q) {
			return s[len(q) : len(s)-len(q)]
		}
	}
	return s
}

// maskWriter conceals secrets in a stream. A secret split across writes is still found:
// output that could be the start of a secret is held back until the next write (or
// Flush) shows whether it is one.
type maskWriter struct {
	w   io.Writer
	set *secretSet

	mu      sync.Mutex
	pending []byte
}

func newMaskWriter(w io.Writer, set *secretSet) *maskWriter { return &maskWriter{w: w, set: set} }

func (m *maskWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	buf := append(m.pending, p...)
	out, rest := m.set.m.Load().scan(buf, false)
	m.pending = append(m.pending[:0:0], rest...)
	if len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what is held back, concealing whole secrets in it: the stream has ended.
func (m *maskWriter) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		return nil
	}
	out, _ := m.set.m.Load().scan(m.pending, true)
	m.pending = nil
	_, err := m.w.Write(out)
	return err
}

// scan conceals every secret in buf. Unless final, it stops at the first position where a
// secret may start but buf ends first, and returns the rest to hold back. At each
// position the longest secret wins, and a longer secret that may still complete wins over
// a shorter one that is already complete, so no part of the longer one escapes.
func (m *matcher) scan(buf []byte, final bool) (out, rest []byte) {
	if m == nil {
		return buf, nil
	}
	out = make([]byte, 0, len(buf))
	emit, i := 0, 0
next:
	for i < len(buf) {
		cands := m.byFirst[buf[i]]
		if len(cands) == 0 {
			i++
			continue
		}
		tail := buf[i:]
		if !final {
			for _, s := range cands {
				if len(tail) < len(s) && bytes.HasPrefix(s, tail) {
					out = append(out, buf[emit:i]...)
					return out, buf[i:]
				}
			}
		}
		for _, s := range cands {
			if bytes.HasPrefix(tail, s) {
				out = append(out, buf[emit:i]...)
				out = append(out, concealed...)
				i += len(s)
				emit = i
				continue next
			}
		}
		i++
	}
	return append(out, buf[emit:]...), nil
}
