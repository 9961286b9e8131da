package fresh

import (
	"fmt"
	"strconv"
)

// GroupSize is how many probe keys one probe message asks for: wxlookup answers at most
// ten numbers a message (server.MaxQueries), one line each.
const GroupSize = 10

// Key is a probe key: a row the writer changes and the traffic asks for.
type Key struct {
	// Name is the key as stored and as asked, e.g. "K-FRESH-07". It has the shape of no
	// demo row (a letter, then a dash), so it never collides with the seeded table.
	Name string
	// Churn keys are deleted and inserted in turn; the others are updated in place.
	// Every key is present at first, with Value(0).
	Churn bool
}

// Keys returns update probe keys that are updated in place, then churn keys that are
// deleted and inserted in turn. Their first letters go round the alphabet, so the keys
// sort into different parts of the key space and so into different reconcile ranges.
func Keys(update, churn int) []Key {
	keys := make([]Key, 0, update+churn)
	for i := range update + churn {
		letter := 'A' + rune(i*7%26) // 7 is coprime to 26: every letter before one repeats
		keys = append(keys, Key{Name: fmt.Sprintf("%c-FRESH-%02d", letter, i), Churn: i >= update})
	}
	return keys
}

// Groups cuts keys into probe messages of at most GroupSize keys, in order, and returns
// the key indexes of each.
func Groups(keys []Key) [][]int {
	var groups [][]int
	for i := range keys {
		if i%GroupSize == 0 {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], i)
	}
	return groups
}

// valueMark starts and ends the sequence number inside a probe row's value.
const valueMark = "FRESH#"

// Value returns the value a change with sequence number seq writes: the number between
// marks, so a reply line shows which change it reflects, whatever the reply template
// puts around it.
func Value(seq int64) string { return valueMark + strconv.FormatInt(seq, 10) + "#" }
