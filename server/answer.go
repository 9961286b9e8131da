package server

import (
	"bytes"
	"context"
	"errors"
	"time"
	"unicode"
	"unicode/utf8"

	"wxlookup/cache"
	"wxlookup/wechat"
)

// MaxQueries is how many numbers one message may ask for; the rest are not looked up.
const MaxQueries = 10

// Lookuper finds the reply line of a normalised key. cache.Cache satisfies it.
type Lookuper interface {
	// Lookup returns the rendered line and the key as stored when found. err is
	// cache.ErrNotReady before the first warm, or a read-through failure.
	Lookup(ctx context.Context, key []byte) (line []byte, canonicalKey string, found bool, err error)
}

// LookupFunc adapts a function to Lookuper.
type LookupFunc func(ctx context.Context, key []byte) ([]byte, string, bool, error)

// Lookup calls f.
func (f LookupFunc) Lookup(ctx context.Context, key []byte) ([]byte, string, bool, error) {
	return f(ctx, key)
}

// answerer turns a parsed message into reply content. It holds no per-request state; the
// buffers it appends to belong to the request.
type answerer struct {
	tmpl    *Templates
	lookup  Lookuper
	allowed func(openID []byte) bool // nil: everyone
	limiter *limiter
	counts  *queryCounters // nil: not counted
}

// answer writes the text reply content for m into w.content. It returns success=true when
// the reply is WeChat's "success" (nothing to show the user), and the outcome for metrics.
func (a *answerer) answer(ctx context.Context, w *work, m *wechat.Message, now time.Time) (o outcome, success bool) {
	openID := m.FromUserName
	dst := w.content[:0]
	defer func() { w.content = dst }()
	if m.IsType("event") {
		if !m.IsEvent("subscribe") {
			return outcomeSuccess, true
		}
		dst = a.tmpl.welcome.appendTo(dst, nil, openID, MaxQueries)
		return outcomeWelcome, false
	}
	if a.allowed != nil && !a.allowed(openID) {
		dst = a.tmpl.unauthorised.appendTo(dst, nil, openID, MaxQueries)
		return outcomeUnauthorised, false
	}
	if !a.limiter.allow(openID, now) {
		dst = a.tmpl.rateLimited.appendTo(dst, nil, openID, MaxQueries)
		return outcomeRateLimited, false
	}
	if !m.IsType("text") {
		dst = a.tmpl.help.appendTo(dst, nil, openID, MaxQueries)
		return outcomeHelp, false
	}
	dst, o = a.answerQuery(ctx, dst, &w.key, m.Content, openID)
	return o, false
}

// answerQuery appends the answer to a text message in the query language of SPEC section 5:
// an optional leading ? or ？, numbers separated by white space, commas or new lines (at most
// MaxQueries), each answered on its own line; 帮助, help or a lone ? give the help text.
// keyBuf is scratch space for normalised keys, kept for the next request.
func (a *answerer) answerQuery(ctx context.Context, dst []byte, keyBuf *[]byte, text, openID []byte) ([]byte, outcome) {
	q := stripQuestionMark(trimSpace(text))
	key := cache.AppendKey((*keyBuf)[:0], q)
	defer func() { *keyBuf = key }()
	if len(key) == 0 || isHelpWord(key) {
		return a.tmpl.help.appendTo(dst, nil, openID, MaxQueries), outcomeHelp
	}
	start := len(dst)
	var found, missing, asked int
	var failed bool
	for len(q) > 0 {
		var tok []byte
		tok, q = nextToken(q)
		tok = stripQuestionMark(tok)
		key = cache.AppendKey(key[:0], tok)
		if len(key) == 0 {
			continue
		}
		if asked == MaxQueries {
			dst = append(dst, '\n')
			dst = a.tmpl.too.appendTo(dst, nil, openID, MaxQueries)
			break
		}
		asked++
		if len(dst) > start {
			dst = append(dst, '\n')
		}
		line, _, ok, err := a.lookup.Lookup(ctx, key)
		switch {
		case errors.Is(err, cache.ErrNotReady):
			return a.tmpl.starting.appendTo(dst[:start], nil, openID, MaxQueries), outcomeStarting
		case err != nil:
			failed = true
			dst = a.tmpl.unavailable.appendTo(dst, tok, openID, MaxQueries)
		case ok:
			found++
			a.counts.countFound()
			dst = append(dst, line...)
		default:
			missing++
			a.counts.countNotFound()
			dst = a.tmpl.notFound.appendTo(dst, tok, openID, MaxQueries)
		}
	}
	switch {
	case failed:
		return dst, outcomeUnavailable
	case missing == 0:
		return dst, outcomeFound
	case found == 0:
		return dst, outcomeNotFound
	}
	return dst, outcomePartial
}

// isHelpWord reports whether a normalised query asks for help.
func isHelpWord(k []byte) bool {
	return string(k) == "help" || string(k) == "帮助" || string(k) == "?"
}

// stripQuestionMark removes one leading ? or ？ and the white space after it.
func stripQuestionMark(s []byte) []byte {
	switch {
	case len(s) > 0 && s[0] == '?':
		s = s[1:]
	case bytes.HasPrefix(s, []byte("？")):
		s = s[len("？"):]
	}
	return trimSpace(s)
}

// nextToken splits the first number off s: tokens are separated by white space (incl. the
// ideographic space), commas, semicolons and the ideographic comma, half- or full-width.
func nextToken(s []byte) (tok, rest []byte) {
	i := 0
	for i < len(s) && isSeparator(s[i:]) == 0 {
		_, n := utf8.DecodeRune(s[i:])
		i += n
	}
	tok = s[:i]
	for i < len(s) {
		n := isSeparator(s[i:])
		if n == 0 {
			break
		}
		i += n
	}
	return tok, s[i:]
}

// isSeparator returns the byte length of the separator s starts with, or 0.
func isSeparator(s []byte) int {
	c := s[0]
	if c < utf8.RuneSelf {
		switch c {
		case ',', ';', ' ', '\t', '\n', '\r', '\v', '\f':
			return 1
		}
		return 0
	}
	r, n := utf8.DecodeRune(s)
	switch r {
	case '，', '；', '、', '\u3000':
		return n
	}
	if unicode.IsSpace(r) {
		return n
	}
	return 0
}

// trimSpace trims Unicode white space from both ends without allocating.
func trimSpace(s []byte) []byte {
	return bytes.TrimFunc(s, unicode.IsSpace)
}
