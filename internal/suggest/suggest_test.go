package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"confg", "config", 1},
		{"databse.conn", "database.conn", 1}, {"kitten", "sitting", 3}, {"wacth", "watch", 2},
	} {
		if got := Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := Distance(tc.b, tc.a); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestNearest(t *testing.T) {
	flags := []string{"config", "config-type", "env-prefix", "watch", "allow-empty"}
	for _, tc := range []struct {
		name string
		want string
	}{
		{"confg", "config"}, // one typo
		{"conf", "config"},  // cut short: the first of the equally near
		{"wacth", "watch"},  // two edits
		{"zzzzzz", ""},      // like nothing
		{"co", ""},          // too short to count as cut short, and 4 edits away
		{"allowempty", "allow-empty"},
	} {
		if got := Nearest(tc.name, flags, 2); got != tc.want {
			t.Errorf("Nearest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
