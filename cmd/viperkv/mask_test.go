package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// feed writes s to a maskWriter in the given chunk sizes (cycled) and flushes it.
func feed(t *testing.T, set *secretSet, s string, sizes ...int) string {
	t.Helper()
	var out bytes.Buffer
	w := newMaskWriter(&out, set)
	for i, k := 0, 0; i < len(s); k++ {
		n := len(s) - i
		if len(sizes) > 0 {
			n = min(n, sizes[k%len(sizes)])
		}
		if m, err := w.Write([]byte(s[i : i+n])); m != n || err != nil {
			t.Fatalf("Write = %d, %v", m, err)
		}
		i += n
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestMaskWriter(t *testing.T) {
	set := &secretSet{}
	set.add("hunter2", "hunter2-long", "pw", "", "  ", "line-one\nline-two\r\nx")
	for _, tc := range []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"password=hunter2;", "password=<concealed by viperkv>;"},
		{"hunter2hunter2", "<concealed by viperkv><concealed by viperkv>"},
		// The longest secret wins.
		{"a hunter2-long b", "a <concealed by viperkv> b"},
		{"hunter2-lon", "<concealed by viperkv>-lon"},
		{"hunter", "hunter"},
		// A value shorter than minMaskLen is not concealed: port=8100 stays readable.
		{"pwd pw", "pwd pw"},
		// A multi-line value, whole and line by line (short lines are not concealed alone).
		{"k=line-one\nline-two\r\nx.", "k=<concealed by viperkv>."},
		{"line-two\n", "<concealed by viperkv>\n"},
		{"x", "x"},
	} {
		for _, sizes := range [][]int{nil, {1}, {2}, {3, 1}, {5}} {
			if got := feed(t, set, tc.in, sizes...); got != tc.want {
				t.Errorf("%q in chunks %v: got %q, want %q", tc.in, sizes, got, tc.want)
			}
		}
	}
	// No secrets: output passes as it is.
	if got := feed(t, &secretSet{}, "hello", 2); got != "hello" {
		t.Errorf("without secrets: %q", got)
	}
}

// TestMaskWriterRandomSplits cuts a stream full of secrets at random places: no secret
// may ever come out, and everything else must come out unchanged.
func TestMaskWriterRandomSplits(t *testing.T) {
	secrets := []string{"s3cr3t-value", "abcabcabd", "aaaaab", "Z"}
	set := &secretSet{}
	set.add(secrets...)
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "abcdZs3r-tvlue "
	for range 300 {
		var in, want strings.Builder
		for range 40 {
			if r.IntN(3) == 0 {
				s := secrets[r.IntN(len(secrets))]
				in.WriteString(s)
				want.WriteString(concealed)
				continue
			}
			// Filler that never completes a secret: no 'Z', and broken up by spaces.
			n := r.IntN(6)
			for range n {
				c := alphabet[r.IntN(len(alphabet))]
				if c == 'Z' {
					c = ' '
				}
				in.WriteByte(c)
				want.WriteByte(c)
			}
			in.WriteByte(' ')
			want.WriteByte(' ')
		}
		sizes := []int{1 + r.IntN(7), 1 + r.IntN(3), 1 + r.IntN(20)}
		got := feed(t, set, in.String(), sizes...)
		for _, s := range secrets {
			if s != "Z" && strings.Contains(strings.ReplaceAll(got, concealed, "|"), s) {
				t.Fatalf("secret %q came out of %q (chunks %v): %q", s, in.String(), sizes, got)
			}
		}
		// Filler can combine with a neighbour into a secret; compare only when it did not.
		if strings.Count(got, concealed) == strings.Count(want.String(), concealed) && got != want.String() {
			t.Fatalf("in %q (chunks %v)\n got %q\nwant %q", in.String(), sizes, got, want.String())
		}
	}
}

// TestSecretFormsConcealEncodings writes secrets, alone, inside longer values and in
// lists, in every format resolve writes and as run exports them, and masks the result:
// the token in each secret (its own, as a line of one may be its token alone) must never
// come out.
func TestSecretFormsConcealEncodings(t *testing.T) {
	secrets := []func(token string) string{
		func(tok string) string { return "  " + tok + `-"q'b\s<l>g&a` + "\tc\x01d\nline-two-" + tok + "  " },
		func(tok string) string { return tok + "-it's" },
		func(tok string) string { return tok + `-a"b` },
		func(tok string) string { return tok + "-p\u2028q\x7f" },
		func(tok string) string { return tok + "-bad\xffutf8" },
		func(tok string) string { return "a b " + tok + " c" },
		func(tok string) string {
			return "-----BEGIN KEY-----\n" + tok + "\n  indented-" + tok + "\n-----END KEY-----\n"
		},
	}
	set := &secretSet{}
	for i, secret := range secrets {
		set.add(secret(fmt.Sprintf("TOKEN%02d", i)))
	}
	for i, secret := range secrets {
		token := fmt.Sprintf("TOKEN%02d", i)
		s := secret(token)
		for _, v := range []any{s, " x" + s, "\x01" + s, "'" + s, "pw=" + s + ";", []any{s, "plain"}, []any{"k=" + s + "'"}} {
			outputs := map[string]string{"run": envValue(v)}
			for _, format := range []string{"yaml", "json", "toml", "env"} {
				var b bytes.Buffer
				if err := writeSettings(&b, map[string]any{"k": v}, format, ""); err != nil {
					t.Fatal(err)
				}
				outputs[format] = b.String()
			}
			for name, out := range outputs {
				if got := feed(t, set, out, 7); strings.Contains(got, token) {
					t.Errorf("%s of %q: %q", name, v, got)
				}
			}
		}
	}
}
