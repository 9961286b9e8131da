package wechat

import (
	"crypto/sha1"
	"encoding/hex"
)

// sha1Hex is the reference the signature tests compare against: plain SHA-1 of the
// already sorted concatenation.
func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
