package cache

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// AppendKey appends the normalised form of s to dst and returns the extended buffer. It is
// the one normalisation shared by the loader (database keys) and the webhook (queries):
// Unicode compatibility folding (NFKC, which maps full-width letters, digits and punctuation
// to half-width), lower-casing, and trimming of surrounding white space (including the
// ideographic space U+3000). Keys of ASCII and full-width forms, the common case, are folded
// without allocating; other input goes through golang.org/x/text's NFKC.
// AppendKey is safe for concurrent use.
func AppendKey(dst, s []byte) []byte {
	s = trimSpace(s)
	start := len(dst)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r >= 0xFF01 && r <= 0xFF5E: // full-width ASCII forms
			c := byte(r - 0xFEE0)
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		case r == 0x3000: // ideographic space
			dst = append(dst, ' ')
		default:
			return appendKeySlow(dst[:start], s)
		}
		i += size
	}
	return dst
}

// Key returns the normalised form of s as a string (see AppendKey).
func Key(s string) string {
	var buf [64]byte
	return string(AppendKey(buf[:0], []byte(s)))
}

// appendKeySlow is AppendKey for input outside ASCII and full-width forms.
func appendKeySlow(dst, s []byte) []byte {
	folded := norm.NFKC.Bytes(s)
	folded = trimSpace(folded)
	for _, r := range string(folded) {
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
	}
	return dst
}

// trimSpace trims Unicode white space from both ends of s without allocating.
func trimSpace(s []byte) []byte {
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		if !unicode.IsSpace(r) {
			break
		}
		s = s[size:]
	}
	for len(s) > 0 {
		r, size := utf8.DecodeLastRune(s)
		if !unicode.IsSpace(r) {
			break
		}
		s = s[:len(s)-size]
	}
	return s
}
