package main

import (
	"fmt"
	"strings"
)

// knownEnv are WXLOOKUP_* names that are not settings but are read all the same.
var knownEnv = map[string]bool{
	"WXLOOKUP_CONFIG":         true, // serve's --config default
	"WXLOOKUP_TEST_MYSQL_DSN": true, // the tests' MariaDB
}

// unknownEnv returns a warning for each WXLOOKUP_* name in environ ("NAME=value" entries)
// that is no setting, naming the closest setting, so a typo does not silently leave a
// default in place.
func unknownEnv(environ []string) []string {
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "WXLOOKUP_") || knownEnv[name] {
			continue
		}
		best, bestD := "", -1
		for _, s := range settings {
			env := envName(s.key)
			if env == name {
				best, bestD = "", 0
				break
			}
			if d := editDistance(strings.ToUpper(name), env); bestD < 0 || d < bestD {
				best, bestD = env, d
			}
		}
		if best != "" {
			warnings = append(warnings, fmt.Sprintf("config: %s is not a setting; did you mean %s?", name, best))
		}
	}
	return warnings
}

// editDistance is the optimal string alignment distance between a and b: insertions,
// deletions, substitutions and transpositions of neighbouring bytes each cost 1.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
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
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
