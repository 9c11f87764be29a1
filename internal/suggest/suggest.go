// Package suggest finds the name a user most likely meant: a flag for a misspelled flag, a
// configuration key for a misspelled environment variable.
package suggest

import "strings"

// Nearest returns the candidate closest to name by edit distance, if it is at most
// maxEdits away (a candidate that name is the first three or more characters of counts
// as one edit), and "" otherwise. Ties go to the earliest candidate.
func Nearest(name string, candidates []string, maxEdits int) string {
	best, bestDist := "", maxEdits+1
	for _, c := range candidates {
		if c == name {
			continue
		}
		d := Distance(name, c)
		if len(name) >= 3 && strings.HasPrefix(c, name) {
			d = min(d, 1) // a name cut short (--conf) is as near as one typo
		}
		if d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between a and b, in bytes.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
