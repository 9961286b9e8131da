package server

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"unicode/utf8"

	"wxlookup/cache"
)

// ImplicitQuery is the name of the one query the table settings of SPEC section 4 form when
// no queries are configured (SPEC section 10).
const ImplicitQuery = "location"

// QuerySpec declares one configured query (SPEC section 10) as the webhook needs it: what
// selects it, and how its replies read. cmd fills it from the file's queries: list.
//
// A query is selected by its Prefix (one of the marks a message starts with, e.g. "#"), or
// by Match (a regular expression with exactly one capture group that the message's first
// token must match; the capture is the key), or by nothing: a catch-all, which answers any
// message and must come last. Prefixes and the token Match sees are normalised as keys are
// (cache.AppendKey: full-width forms to half-width, lower case), so "＃" and "#" are one
// prefix and Match must be written for lower case.
type QuerySpec struct {
	Name   string
	Prefix []string
	Match  string
	// Help is the line the help text shows for this query; "" shows none.
	Help string
	// ValueColumns names the value columns, for the found template's {{.Column.name}}.
	ValueColumns []string
	// Found and NotFound are the query's reply templates; "" takes DefaultFound and
	// DefaultNotFound.
	Found, NotFound string
}

// QueryError is the error NewQuery and CheckQueries return: which query, which of its
// settings (name, prefix, match, found, not_found), and why.
type QueryError struct {
	Query string
	Field string
	Err   error
}

func (e *QueryError) Error() string {
	return fmt.Sprintf("server: query %q: %s: %v", e.Query, e.Field, e.Err)
}

// Unwrap returns the reason.
func (e *QueryError) Unwrap() error { return e.Err }

// Query is a compiled QuerySpec: how messages select it and its reply templates. It is
// immutable and safe for concurrent use.
type Query struct {
	spec     QuerySpec
	prefixes [][]byte       // normalised, longest first; nil for a regex query or a catch-all
	match    *regexp.Regexp // nil unless selected by a regular expression
	found    *replyTemplate
	notFound *replyTemplate
	// ownSuggestions is set when the not-found template shows {{.Suggestions}} itself;
	// otherwise the did-you-mean line follows it when there are any.
	ownSuggestions bool
}

// queryName is what a query's name may be: it is a metric label value, a status-page
// section and an audit field.
var queryName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// NewQuery compiles spec, or returns a *QueryError naming the first bad setting.
func NewQuery(spec QuerySpec) (*Query, error) {
	bad := func(field string, err error) (*Query, error) {
		return nil, &QueryError{Query: spec.Name, Field: field, Err: err}
	}
	if !queryName.MatchString(spec.Name) {
		return bad("name", fmt.Errorf("%q is not a query name (a letter, then letters, digits, _ or -; at most 64)", spec.Name))
	}
	q := &Query{spec: spec}
	for _, p := range spec.Prefix {
		n := []byte(cache.Key(p))
		switch {
		case len(n) == 0:
			return bad("prefix", errors.New("an empty prefix"))
		case hasSeparator(n):
			return bad("prefix", fmt.Errorf("%q has white space or a separator (, ; 、) in it", p))
		case !slices.ContainsFunc(q.prefixes, func(o []byte) bool { return bytes.Equal(o, n) }):
			q.prefixes = append(q.prefixes, n)
		}
	}
	slices.SortStableFunc(q.prefixes, func(a, b []byte) int { return len(b) - len(a) })
	if spec.Match != "" {
		if len(spec.Prefix) > 0 {
			return bad("match", errors.New("a query has prefix or match, not both"))
		}
		re, err := regexp.Compile(spec.Match)
		if err != nil {
			return bad("match", err)
		}
		if n := re.NumSubexp(); n != 1 {
			return bad("match", fmt.Errorf("%q has %d capture groups, want exactly one: the key", spec.Match, n))
		}
		q.match = re
	}
	scope := &foundScope{query: spec.Name, columns: spec.ValueColumns}
	var err error
	if q.found, err = compileTemplate("found", pick(spec.Found, DefaultFound), scope); err != nil {
		return bad("found", err)
	}
	if q.notFound, err = compileTemplate("not_found", pick(spec.NotFound, DefaultNotFound), nil); err != nil {
		return bad("not_found", err)
	}
	q.ownSuggestions = q.notFound.uses["Suggestions"]
	return q, nil
}

// hasSeparator reports whether s holds a rune that separates numbers in a message.
func hasSeparator(s []byte) bool {
	for i := 0; i < len(s); {
		if isSeparator(s[i:]) > 0 {
			return true
		}
		_, n := utf8.DecodeRune(s[i:])
		i += n
	}
	return false
}

// Name returns the query's name: its metric label, status section and audit field.
func (q *Query) Name() string { return q.spec.Name }

// catchAll reports whether the query answers any message: no prefix and no match.
func (q *Query) catchAll() bool { return q.prefixes == nil && q.match == nil }

// AppendFound appends the found line of a row, the key as stored and its value columns, to
// dst and returns the extended slice: the cache's Render for this query. It is called by
// the loader when a row enters the cache, never per request; a found template of only text
// and {{.Key}}, {{.Value}}, {{.Column.name}} or {{.Query}} (the default is one) appends
// without allocating. Safe for concurrent use.
func (q *Query) AppendFound(dst []byte, key string, values []string) []byte {
	v := vars{stored: key, values: values}
	return q.found.append(dst, &v)
}

// CheckQueries reports the first problem of a set of queries as a whole, in order, as a
// *QueryError: a name used twice, a prefix that overlaps another query's (one starts with
// the other after normalisation, so "？" and "?" are the same), or a catch-all query (no
// prefix and no match) that is not the last or not the only one.
func CheckQueries(qs []*Query) error {
	for j, b := range qs {
		for _, a := range qs[:j] {
			if a.Name() == b.Name() {
				return &QueryError{Query: b.Name(), Field: "name", Err: errors.New("used by two queries")}
			}
			for _, pa := range a.prefixes {
				for _, pb := range b.prefixes {
					if bytes.HasPrefix(pa, pb) || bytes.HasPrefix(pb, pa) {
						return &QueryError{Query: b.Name(), Field: "prefix", Err: fmt.Errorf(
							"%q overlaps %q of query %q (prefixes compare normalised: full-width as half-width, lower case)",
							pb, pa, a.Name())}
					}
				}
			}
		}
		if b.catchAll() && j != len(qs)-1 {
			return &QueryError{Query: b.Name(), Field: "prefix", Err: fmt.Errorf(
				"a query with neither prefix nor match answers every message, so it must be the last (query %q follows it)", qs[j+1].Name())}
		}
	}
	return nil
}
