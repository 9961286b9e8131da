package server

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
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
// buffers it appends to belong to the request's work.
type answerer struct {
	tmpl    *Templates
	routes  atomic.Pointer[router]   // the configured queries (SetRoutes); never nil
	allowed func(openID []byte) bool // nil: everyone
	limiter *limiter
	audit   bool // record the keys asked in the work, for the audit log
}

// answer writes the text reply content for m into w.content, and what the audit log needs
// into w. It returns success=true when the reply is WeChat's "success" (nothing to show
// the user), and the outcome for metrics.
func (a *answerer) answer(ctx context.Context, w *work, m *wechat.Message, now time.Time) (o outcome, success bool) {
	openID := m.FromUserName
	w.query, w.suggested, w.nkeys = "", false, 0
	dst := w.content[:0]
	defer func() { w.content = dst }()
	v := vars{openID: openID}
	if m.IsType("event") {
		if !m.IsEvent("subscribe") {
			return outcomeSuccess, true
		}
		dst = a.tmpl.welcome.append(dst, &v)
		return outcomeWelcome, false
	}
	if a.allowed != nil && !a.allowed(openID) {
		dst = a.tmpl.unauthorised.append(dst, &v)
		return outcomeUnauthorised, false
	}
	if !a.limiter.allow(openID, now) {
		dst = a.tmpl.rateLimited.append(dst, &v)
		return outcomeRateLimited, false
	}
	r := a.acquire(w.shard)
	defer r.release(w.shard)
	if !m.IsType("text") {
		dst = a.appendHelp(dst, r, openID)
		return outcomeHelp, false
	}
	dst, o = a.answerQuery(ctx, w, r, dst, m.Content, openID, now)
	return o, false
}

// answerQuery appends the answer to a text message in the query language of SPEC
// sections 5 and 10. The message is trimmed and normalised (cache.AppendKey); empty, 帮助,
// help or a lone ? get the help text. Otherwise the first query of r that the first number
// selects (see router.selectRoute) answers every number of the message: separated by white
// space, commas or new lines, each without the query's mark (its prefix, or a catch-all's
// optional ?), at most MaxQueries, each on its own line. A regex query looks up each
// number's capture; a number it does not match is not found. No query selected: the help
// text.
func (a *answerer) answerQuery(ctx context.Context, w *work, r *router, dst, text, openID []byte, now time.Time) ([]byte, outcome) {
	text = trimSpace(text)
	key := cache.AppendKey(w.key[:0], text)
	defer func() { w.key = key }()
	if len(key) == 0 || isHelpWord(key) {
		return a.appendHelp(dst, r, openID), outcomeHelp
	}
	first, _ := nextToken(text)
	w.scratch = cache.AppendKey(w.scratch[:0], first)
	rt, err := r.selectRoute(w.scratch)
	if err != nil {
		return a.appendHelp(dst, r, openID), outcomeHelp
	}
	q := rt.q
	w.query = q.Name()
	w.keyLog = w.keyLog[:0]
	start := len(dst)
	var found, missing, asked int
	var failed bool
	for rest := text; len(rest) > 0; {
		var tok []byte
		tok, rest = nextToken(rest)
		tok = q.stripPrefix(tok, &w.scratch)
		key = cache.AppendKey(key[:0], tok)
		if len(key) == 0 {
			continue
		}
		if asked == MaxQueries {
			dst = append(dst, '\n')
			dst = a.tmpl.too.append(dst, &vars{openID: openID})
			break
		}
		asked++
		if len(dst) > start {
			dst = append(dst, '\n')
		}
		if q.match != nil {
			m := q.match.FindSubmatchIndex(key)
			if m == nil || m[2] < 0 || m[2] == m[3] {
				missing++
				a.noteKey(w, tok)
				dst = a.appendNotFound(dst, w, rt, tok, nil, openID, now)
				continue
			}
			key = key[m[2]:m[3]]
		}
		a.noteKey(w, key)
		line, _, ok, err := rt.lookup.Lookup(ctx, key)
		switch {
		case errors.Is(err, cache.ErrNotReady):
			return a.tmpl.starting.append(dst[:start], &vars{openID: openID}), outcomeStarting
		case err != nil:
			failed = true
			dst = a.tmpl.unavailable.append(dst, &vars{asked: tok, openID: openID})
		case ok:
			found++
			rt.counts.countFound()
			dst = append(dst, line...)
		default:
			missing++
			dst = a.appendNotFound(dst, w, rt, tok, key, openID, now)
		}
	}
	switch {
	case failed:
		return dst, outcomeUnavailable
	case asked == 0:
		return a.appendHelp(dst[:start], r, openID), outcomeHelp // only the query's mark
	case missing == 0:
		return dst, outcomeFound
	case found == 0:
		return dst, outcomeNotFound
	}
	return dst, outcomePartial
}

// appendNotFound answers a number not found: asked as the worker wrote it (without the
// query's mark), key normalised (nil when it never came to a lookup). It counts it, records
// it in the query's not-found report, and offers the nearest keys of the query's cache:
// through the not-found template's {{.Suggestions}}, or on a did-you-mean line after it.
func (a *answerer) appendNotFound(dst []byte, w *work, rt *queryRoute, asked, key, openID []byte, now time.Time) []byte {
	rt.counts.countNotFound()
	rt.report.record(asked, now)
	w.sugg = w.sugg[:0]
	if rt.suggest != nil && key != nil {
		w.sugg = rt.suggest.Suggest(w.sugg, key, MaxSuggestions)
		w.sugg = w.sugg[:min(len(w.sugg), MaxSuggestions)]
	}
	v := vars{asked: asked, suggestions: w.sugg, openID: openID}
	dst = rt.q.notFound.append(dst, &v)
	if len(w.sugg) > 0 {
		w.suggested = true
		if !rt.q.ownSuggestions {
			dst = append(dst, '\n')
			dst = a.tmpl.didYouMean.append(dst, &v)
		}
	}
	return dst
}

// appendHelp appends the help text: the help template, then each query's help line.
func (a *answerer) appendHelp(dst []byte, r *router, openID []byte) []byte {
	dst = a.tmpl.help.append(dst, &vars{openID: openID})
	for _, rt := range r.routes {
		if h := rt.q.spec.Help; h != "" {
			dst = append(dst, '\n')
			dst = append(dst, h...)
		}
	}
	return dst
}

// noteKey records a key asked for the audit log, when it is on: at most MaxQueries, in
// the work's own buffer.
func (a *answerer) noteKey(w *work, key []byte) {
	if !a.audit || w.nkeys == MaxQueries {
		return
	}
	w.keyLog = append(w.keyLog, key...)
	w.keyEnds[w.nkeys] = len(w.keyLog)
	w.nkeys++
}

// isHelpWord reports whether a normalised query asks for help.
func isHelpWord(k []byte) bool {
	return string(k) == "help" || string(k) == "帮助" || string(k) == "?"
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
