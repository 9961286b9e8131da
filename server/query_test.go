package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
)

// fakeTable is a query's cache in tests: rows by stored key rendered with the query's found
// template, and a Suggest that offers the keys listed for a normalised key (the cache's
// real index is tested in cache/).
type fakeTable struct {
	lines    map[string][]byte // by normalised key
	suggest  map[string][]string
	notReady bool
}

func newFakeTable(tb testing.TB, q *Query, rows map[string][]string) *fakeTable {
	tb.Helper()
	f := &fakeTable{lines: map[string][]byte{}, suggest: map[string][]string{}}
	for k, v := range rows {
		f.lines[cache.Key(k)] = q.AppendFound(nil, k, v)
	}
	return f
}

func (f *fakeTable) Lookup(_ context.Context, key []byte) ([]byte, string, bool, error) {
	if f.notReady {
		return nil, "", false, cache.ErrNotReady
	}
	l, ok := f.lines[string(key)]
	return l, "", ok, nil
}

func (f *fakeTable) Suggest(dst []string, key []byte, max int) []string {
	s := f.suggest[string(key)]
	return append(dst, s[:min(len(s), max)]...)
}

// mustQuery compiles spec or fails the test.
func mustQuery(tb testing.TB, spec QuerySpec) *Query {
	tb.Helper()
	q, err := NewQuery(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return q
}

// issueQueries are the queries of issue 15's example, and a work-order query selected by a
// regular expression, with their tables.
func issueQueries(tb testing.TB) []Route {
	tb.Helper()
	loc := mustQuery(tb, QuerySpec{Name: "location", Prefix: []string{"?", "？"}, ValueColumns: []string{"location"},
		Help: "?工件号：查工作台位", Found: "[{{.Key}}]的工作台位为[{{.Value}}]", NotFound: "未找到[{{.Query}}]"})
	stock := mustQuery(tb, QuerySpec{Name: "stock", Prefix: []string{"#", "＃"}, ValueColumns: []string{"qty", "bin"},
		Help: "#零件号：查库存", Found: "[{{.Key}}] 库存{{.Column.qty}}件，货位{{.Column.bin}}"})
	order := mustQuery(tb, QuerySpec{Name: "order", Match: `^wo(\d{4})$`, ValueColumns: []string{"status"},
		Help: "WO+四位数：查工单", Found: "工单{{.Key}}：{{.Value}}"})
	locT := newFakeTable(tb, loc, map[string][]string{"18-546": {"车体新厂房3号"}, "A7-001": {"总装车间A区12排"}})
	locT.suggest["18-564"] = []string{"18-546", "18-560", "18-567", "18-568"}
	stockT := newFakeTable(tb, stock, map[string][]string{"P-100": {"12", "B-3"}})
	orderT := newFakeTable(tb, order, map[string][]string{"0042": {"在制"}})
	return []Route{{Query: loc, Cache: locT}, {Query: stock, Cache: stockT}, {Query: order, Cache: orderT}}
}

// TestQueryMatching: the first query whose prefix the message starts with, or whose regex
// its first number matches, answers every number of the message; no match gets the help
// text listing each query's help line.
func TestQueryMatching(t *testing.T) {
	tmpl, err := NewTemplates(TemplateTexts{Help: "可以查询："}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := newRoutedAnswerer(tmpl, issueQueries(t)...)
	help := "可以查询：\n?工件号：查工作台位\n#零件号：查库存\nWO+四位数：查工单"
	tests := []struct {
		name, in, want, query string
		outcome               outcome
	}{
		{"prefix ?", "?18-546", "[18-546]的工作台位为[车体新厂房3号]", "location", outcomeFound},
		{"full-width prefix", "？ａ７－００１", "[A7-001]的工作台位为[总装车间A区12排]", "location", outcomeFound},
		{"prefix with space after it", "? 18-546", "[18-546]的工作台位为[车体新厂房3号]", "location", outcomeFound},
		{"second query by its prefix", "#P-100", "[P-100] 库存12件，货位B-3", "stock", outcomeFound},
		{"full-width second prefix, lower case", "＃p-100", "[P-100] 库存12件，货位B-3", "stock", outcomeFound},
		{"several numbers go to the selected query", "#P-100 P-999，#P-100", "[P-100] 库存12件，货位B-3\n[P-999]未找到，请核对工件号。\n[P-100] 库存12件，货位B-3", "stock", outcomePartial},
		{"not found names the number as asked", "?18-999", "未找到[18-999]", "location", outcomeNotFound},
		{"regex: the capture is the key", "WO0042", "工单0042：在制", "order", outcomeFound},
		{"regex: every number must match", "wo0042 wo42 WO0042", "工单0042：在制\n[wo42]未找到，请核对工件号。\n工单0042：在制", "order", outcomePartial},
		{"regex selects by the first number only", "18-546 WO0042", help, "", outcomeHelp},
		{"no query matches: help lists the queries", "18-546", help, "", outcomeHelp},
		{"a query's mark alone", "#", help, "stock", outcomeHelp},
		{"help word", "帮助", help, "", outcomeHelp},
		{"lone ?", "?", help, "", outcomeHelp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := new(work)
			o, _ := a.answer(context.Background(), w, textMessage(tt.in), time.Now())
			if got := string(w.content); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if o != tt.outcome {
				t.Errorf("outcome %s, want %s", outcomeNames[o], outcomeNames[tt.outcome])
			}
			if w.query != tt.query {
				t.Errorf("answered by query %q, want %q", w.query, tt.query)
			}
		})
	}
}

// TestCatchAllQuery: a query with neither prefix nor match answers what no query before it
// matches, with SPEC 5's optional leading ? stripped from each number.
func TestCatchAllQuery(t *testing.T) {
	tmpl, err := NewTemplates(TemplateTexts{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	routes := issueQueries(t)
	stock, loc := routes[1], routes[0]
	catchAll := mustQuery(t, QuerySpec{Name: "location", ValueColumns: []string{"location"}})
	loc.Query = catchAll
	loc.Cache = newFakeTable(t, catchAll, map[string][]string{"18-546": {"车体新厂房3号"}})
	a := newRoutedAnswerer(tmpl, stock, loc)
	for _, tt := range []struct{ in, want string }{
		{"18-546", "[18-546]的工作台位为[车体新厂房3号]"},
		{"?18-546 ？18-546", "[18-546]的工作台位为[车体新厂房3号]\n[18-546]的工作台位为[车体新厂房3号]"},
		{"#P-100", "[P-100] 库存12件，货位B-3"},
	} {
		w := new(work)
		a.answer(context.Background(), w, textMessage(tt.in), time.Now())
		if got := string(w.content); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestQueryStartingIsPerQuery: a query whose cache has not loaded answers "starting up";
// the others answer normally.
func TestQueryStartingIsPerQuery(t *testing.T) {
	tmpl, err := NewTemplates(TemplateTexts{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	routes := issueQueries(t)
	routes[1].Cache.(*fakeTable).notReady = true
	a := newRoutedAnswerer(tmpl, routes...)
	for _, tt := range []struct {
		in, want string
		o        outcome
	}{
		{"#P-100", DefaultStarting, outcomeStarting},
		{"?18-546", "[18-546]的工作台位为[车体新厂房3号]", outcomeFound},
	} {
		w := new(work)
		if o, _ := a.answer(context.Background(), w, textMessage(tt.in), time.Now()); o != tt.o || string(w.content) != tt.want {
			t.Errorf("%q: got %s %q, want %s %q", tt.in, outcomeNames[o], w.content, outcomeNames[tt.o], tt.want)
		}
	}
}

// TestSuggestions: a number not found offers up to MaxSuggestions nearest keys from its
// query's cache on a did-you-mean line (a typo, a transposition), none when nothing is
// close; a not-found template that shows {{.Suggestions}} itself gets no extra line.
func TestSuggestions(t *testing.T) {
	q := mustQuery(t, QuerySpec{Name: "location", ValueColumns: []string{"location"}})
	own := mustQuery(t, QuerySpec{Name: "location", ValueColumns: []string{"location"},
		NotFound: "没有{{.Key}}{{if .Suggestions}}，试试 {{.Suggestions}}{{end}}"})
	rows := map[string][]string{"18-546": {"车体新厂房3号"}, "18-564": {"车体新厂房5号"}}
	tests := []struct {
		name    string
		q       *Query
		ask     string
		offered []string
		want    string
		outcome outcome
	}{
		{"typo", q, "18-547", []string{"18-546"}, "[18-547]未找到，请核对工件号。\n您是不是要找：18-546", outcomeNotFound},
		{"transposition", q, "18-465", []string{"18-546", "18-564"}, "[18-465]未找到，请核对工件号。\n您是不是要找：18-546、18-564", outcomeNotFound},
		{"at most three", q, "18-5", []string{"18-546", "18-564", "18-5A", "18-5B"}, "[18-5]未找到，请核对工件号。\n您是不是要找：18-546、18-564、18-5A", outcomeNotFound},
		{"nothing close", q, "99-999", nil, "[99-999]未找到，请核对工件号。", outcomeNotFound},
		{"the template shows them", own, "18-465", []string{"18-546", "18-564"}, "没有18-465，试试 18-546、18-564", outcomeNotFound},
		{"the template shows none", own, "99-999", nil, "没有99-999", outcomeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := NewTemplates(TemplateTexts{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			tbl := newFakeTable(t, tt.q, rows)
			tbl.suggest[cache.Key(tt.ask)] = tt.offered
			a := newRoutedAnswerer(tmpl, Route{Query: tt.q, Cache: tbl})
			w := new(work)
			o, _ := a.answer(context.Background(), w, textMessage(tt.ask), time.Now())
			if got := string(w.content); got != tt.want || o != tt.outcome {
				t.Errorf("got %s %q, want %s %q", outcomeNames[o], got, outcomeNames[tt.outcome], tt.want)
			}
			if w.suggested != (len(tt.offered) > 0) {
				t.Errorf("suggested = %v, want %v", w.suggested, len(tt.offered) > 0)
			}
		})
	}
}

// TestNewQueryErrorsNameTheField: each invalid query setting is refused with a
// *QueryError naming the query and the field.
func TestNewQueryErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name  string
		spec  QuerySpec
		field string
		want  string
	}{
		{"empty name", QuerySpec{}, "name", "is not a query name"},
		{"name with a space", QuerySpec{Name: "work order"}, "name", "is not a query name"},
		{"empty prefix", QuerySpec{Name: "q", Prefix: []string{" "}}, "prefix", "empty prefix"},
		{"prefix with a separator", QuerySpec{Name: "q", Prefix: []string{"a,b"}}, "prefix", "separator"},
		{"both prefix and match", QuerySpec{Name: "q", Prefix: []string{"#"}, Match: `^(\d+)$`}, "match", "not both"},
		{"regex that does not compile", QuerySpec{Name: "q", Match: `^(\d+$`}, "match", "missing closing )"},
		{"regex without a group", QuerySpec{Name: "q", Match: `^\d+$`}, "match", "0 capture groups, want exactly one"},
		{"regex with two groups", QuerySpec{Name: "q", Match: `^(\d+)-(\d+)$`}, "match", "2 capture groups"},
		{"found references a missing column", QuerySpec{Name: "q", ValueColumns: []string{"qty"}, Found: "{{.Column.bin}}"}, "found", `no value column "bin"`},
		{"not found with a row field", QuerySpec{Name: "q", NotFound: "{{.Value}}"}, "not_found", "Value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewQuery(tt.spec)
			var qe *QueryError
			if !errors.As(err, &qe) || qe.Field != tt.field || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a QueryError on %s saying %q", err, tt.field, tt.want)
			}
			if !strings.Contains(err.Error(), `query "`+tt.spec.Name+`"`) {
				t.Errorf("%q does not name the query", err)
			}
		})
	}
}

// TestCheckQueries: the set is refused, naming the later query, for a duplicate name, a
// prefix that overlaps another query's after normalisation, and a catch-all that is not
// last (so also a second one).
func TestCheckQueries(t *testing.T) {
	q := func(name string, prefix ...string) *Query { return mustQuery(t, QuerySpec{Name: name, Prefix: prefix}) }
	re := mustQuery(t, QuerySpec{Name: "order", Match: `^wo(\d+)$`})
	tests := []struct {
		name string
		qs   []*Query
		want string // "" for none
	}{
		{"the issue's example", []*Query{q("location", "?", "？"), q("stock", "#", "＃")}, ""},
		{"regex and catch-all last", []*Query{q("stock", "#"), re, q("location")}, ""},
		{"duplicate name", []*Query{q("stock", "#"), q("stock", "$")}, `query "stock": name: used by two queries`},
		{"same prefix", []*Query{q("location", "#"), q("stock", "#")}, `query "stock": prefix: "#" overlaps "#" of query "location"`},
		{"full-width and half-width are one", []*Query{q("location", "？"), q("help", "?")}, `query "help": prefix: "?" overlaps "?"`},
		{"one prefix starts the other", []*Query{q("wo", "wo"), q("work", "work")}, `query "work": prefix: "work" overlaps "wo"`},
		{"case folds", []*Query{q("a", "WO"), q("b", "wo")}, `overlaps`},
		{"catch-all not last", []*Query{q("location"), q("stock", "#")}, `query "location": prefix: a query with neither prefix nor match`},
		{"two catch-alls", []*Query{q("location"), q("other")}, `query "location": prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckQueries(tt.qs)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}
