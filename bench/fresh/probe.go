package fresh

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Text returns the probe message that asks for the keys of group (indexes into keys):
// the names separated by spaces, after a "?".
func Text(keys []Key, group []int) string {
	names := make([]string, len(group))
	for i, k := range group {
		names[i] = keys[k].Name
	}
	return "?" + strings.Join(names, " ")
}

// observation is what one reply line showed for one key.
type observation struct {
	k     int
	found bool
	seq   int64
}

// Check reads content, the reply to a probe message that asked for the keys of group
// (indexes into the tracker's keys), sent at sent and received at recv, and records what
// each key's line shows: a value written by this package (found, with its sequence
// number) or none (not found). It returns an error when a key has no line or a malformed
// value; nothing is recorded then. Safe for concurrent use.
func (t *Tracker) Check(group []int, content []byte, sent, recv time.Time) error {
	var obs [GroupSize]observation
	if len(group) > GroupSize {
		return fmt.Errorf("fresh: a probe group of %d keys, more than %d", len(group), GroupSize)
	}
	for i, k := range group {
		line, ok := lineOf(content, t.needles[k])
		if !ok {
			return fmt.Errorf("fresh: reply does not name [%s]: %.200q", t.names[k], content)
		}
		seq, found, err := parseValue(line)
		if err != nil {
			return fmt.Errorf("fresh: reply line of [%s]: %w", t.names[k], err)
		}
		obs[i] = observation{k: k, found: found, seq: seq}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range obs[:len(group)] {
		st := state{found: o.found, seq: o.seq}
		t.observe(o.k, st, sent, recv)
	}
	return nil
}

// lineOf returns the line of content that starts with needle ("[key]"), as both the found
// and the not-found replies do, up to the next new line.
func lineOf(content, needle []byte) ([]byte, bool) {
	for off := 0; ; {
		i := bytes.Index(content[off:], needle)
		if i < 0 {
			return nil, false
		}
		i += off
		if i == 0 || content[i-1] == '\n' {
			line := content[i:]
			if j := bytes.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			return line, true
		}
		off = i + 1
	}
}

// parseValue finds Value's marks in a reply line: found with the sequence number between
// them, or not found when there are none.
func parseValue(line []byte) (seq int64, found bool, err error) {
	i := bytes.Index(line, []byte(valueMark))
	if i < 0 {
		return 0, false, nil
	}
	rest := line[i+len(valueMark):]
	j := bytes.IndexByte(rest, '#')
	if j < 0 {
		return 0, false, fmt.Errorf("value %q has no closing #", line[i:])
	}
	seq, err = strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil || seq < 0 {
		return 0, false, fmt.Errorf("value %q: not a sequence number", line[i:])
	}
	return seq, true, nil
}
