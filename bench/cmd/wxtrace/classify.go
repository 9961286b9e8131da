package main

import "strings"

// class is what a goroutine does, judged from the functions on its stacks. The order is
// the precedence: a stack, and a goroutine over its life, takes the highest class any of
// its frames matches, so a goroutine once seen in the loader or the webhook stays there.
type class int

const (
	classOther class = iota
	classMySQL
	classRistretto
	classWebhook
	classAdmin
	classLoader
	classGCWorker
	numClasses
)

// classNames are the column headings, in class order.
var classNames = [numClasses]string{"other", "mysql", "ristretto", "webhook", "admin", "loader", "gcworker"}

func (c class) String() string { return classNames[c] }

// rule gives class to a frame whose function is prefix, or is inside it: prefix followed
// by "." (a method, a closure) or "/" (a subpackage). A package path thus matches all of
// its functions, and a function its closures.
type rule struct {
	class  class
	prefix string
}

// defaultRules are wxlookup's goroutine classes.
//
// The admin listener's handlers are methods of wxlookup/server.(*Admin), so they would
// otherwise count as the webhook; POST /admin/reload still counts as the loader, because
// its goroutine runs Reload. A MySQL frame on the loader's goroutine is the loader's
// snapshot query, and the loader outranks it.
var defaultRules = []rule{
	{classGCWorker, "runtime.gcBgMarkWorker"},
	{classLoader, "wxlookup/cache.(*Cache).build"},
	{classLoader, "wxlookup/cache.(*Cache).Reload"},
	{classLoader, "wxlookup/cache.(*Cache).reconcileLocked"},
	{classLoader, "wxlookup/cache.(*Cache).loadLocked"},
	{classLoader, "wxlookup/cache.(*pacer)"},
	{classAdmin, "wxlookup/server.(*Admin)"},
	{classWebhook, "github.com/valyala/fasthttp"},
	{classWebhook, "wxlookup/server"},
	{classRistretto, "github.com/dgraph-io/ristretto"},
	{classMySQL, "github.com/go-sql-driver/mysql"},
}

// classify returns the highest class that rules give any of funcs (function names, as
// in a stack's frames), or classOther.
func classify(funcs []string, rules []rule) class {
	c := classOther
	for _, fn := range funcs {
		for _, r := range rules {
			if r.class > c && within(fn, r.prefix) {
				c = r.class
			}
		}
	}
	return c
}

// within reports whether the function fn is prefix or inside it.
func within(fn, prefix string) bool {
	rest, ok := strings.CutPrefix(fn, prefix)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '/')
}
