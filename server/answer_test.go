package server

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"wxlookup/cache"
	"wxlookup/wechat"
)

// mapLookup is a Lookuper over a map of stored key → value, normalising stored keys with
// cache.Key and rendering lines with the default found template.
func mapLookup(tb testing.TB, rows map[string]string) LookupFunc {
	tb.Helper()
	tmpl, err := NewTemplates(TemplateTexts{}, []string{"location"})
	if err != nil {
		tb.Fatal(err)
	}
	type entry struct {
		line      []byte
		canonical string
	}
	m := make(map[string]entry, len(rows))
	for k, v := range rows {
		m[cache.Key(k)] = entry{tmpl.Found(k, []string{v}), k}
	}
	return func(_ context.Context, key []byte) ([]byte, string, bool, error) {
		e, ok := m[string(key)]
		return e.line, e.canonical, ok, nil
	}
}

var demoRows = map[string]string{
	"18-546": "车体新厂房3号",
	"A7-001": "总装车间A区12排",
	"18-547": "车体新厂房4号",
}

func newTestAnswerer(tb testing.TB, lookup Lookuper) *answerer {
	tb.Helper()
	tmpl, err := NewTemplates(TemplateTexts{}, []string{"location"})
	if err != nil {
		tb.Fatal(err)
	}
	return newRoutedAnswerer(tmpl, Route{Query: tmpl.location, Cache: lookup})
}

// newRoutedAnswerer returns an answerer over routes, each with its own not-found report.
func newRoutedAnswerer(tmpl *Templates, routes ...Route) *answerer {
	a := &answerer{tmpl: tmpl}
	var rs []*queryRoute
	for _, r := range routes {
		rt := &queryRoute{q: r.Query, lookup: r.Cache, report: newNotFoundReport(0)}
		rt.suggest, _ = r.Cache.(Suggester)
		rs = append(rs, rt)
	}
	a.routes.Store(newRouter(rs))
	return a
}

func textMessage(content string) *wechat.Message {
	return &wechat.Message{ToUserName: []byte("gh_test"), FromUserName: []byte("oUser"),
		MsgType: []byte("text"), Content: []byte(content), MsgID: []byte("1")}
}

func TestAnswerQuery(t *testing.T) {
	a := newTestAnswerer(t, mapLookup(t, demoRows))
	help := strings.ReplaceAll(DefaultHelp, "{{.Max}}", "10")
	tests := []struct {
		name, in, want string
		outcome        outcome
	}{
		{"spec example", "?18-546", "[18-546]的工作台位为[车体新厂房3号]", outcomeFound},
		{"no question mark", "18-546", "[18-546]的工作台位为[车体新厂房3号]", outcomeFound},
		{"full-width question mark", "？18-546", "[18-546]的工作台位为[车体新厂房3号]", outcomeFound},
		{"full-width number", "？１８－５４６", "[18-546]的工作台位为[车体新厂房3号]", outcomeFound},
		{"surrounding space", "  ? 18-546 \n", "[18-546]的工作台位为[车体新厂房3号]", outcomeFound},
		{"case folded, named as stored", "?a7-001", "[A7-001]的工作台位为[总装车间A区12排]", outcomeFound},
		{"not found names the number as asked", "?99-999", "[99-999]未找到，请核对工件号。", outcomeNotFound},
		{"several by space", "?18-546 a7-001", "[18-546]的工作台位为[车体新厂房3号]\n[A7-001]的工作台位为[总装车间A区12排]", outcomeFound},
		{"several by commas and new lines", "18-546,18-547\n99-1", "[18-546]的工作台位为[车体新厂房3号]\n[18-547]的工作台位为[车体新厂房4号]\n[99-1]未找到，请核对工件号。", outcomePartial},
		{"full-width comma and 、", "18-546，18-547、a7-001", "[18-546]的工作台位为[车体新厂房3号]\n[18-547]的工作台位为[车体新厂房4号]\n[A7-001]的工作台位为[总装车间A区12排]", outcomeFound},
		{"each with its own ?", "?18-546 ?18-547", "[18-546]的工作台位为[车体新厂房3号]\n[18-547]的工作台位为[车体新厂房4号]", outcomeFound},
		{"help word", "帮助", help, outcomeHelp},
		{"help english any case", "HELP", help, outcomeHelp},
		{"full-width help", "ｈｅｌｐ", help, outcomeHelp},
		{"lone ?", "?", help, outcomeHelp},
		{"lone ？", "？", help, outcomeHelp},
		{"empty", "   ", help, outcomeHelp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := new(work)
			o, success := a.answer(context.Background(), w, textMessage(tt.in), time.Now())
			if success {
				t.Fatalf("success reply for %q, want text", tt.in)
			}
			if got := string(w.content); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if o != tt.outcome {
				t.Errorf("outcome %s, want %s", outcomeNames[o], outcomeNames[tt.outcome])
			}
		})
	}
}

func TestAnswerAtMostTenNumbers(t *testing.T) {
	a := newTestAnswerer(t, mapLookup(t, demoRows))
	var asked []string
	for i := range 12 {
		asked = append(asked, "x"+string(rune('a'+i)))
	}
	w := new(work)
	a.answer(context.Background(), w, textMessage(strings.Join(asked, " ")), time.Now())
	lines := strings.Split(string(w.content), "\n")
	if len(lines) != MaxQueries+1 {
		t.Fatalf("got %d lines, want %d answers and a note:\n%s", len(lines), MaxQueries, w.content)
	}
	if got, want := lines[MaxQueries], "（一次最多查询10个，只查询了前10个）"; got != want {
		t.Errorf("got note %q, want %q", got, want)
	}
	if strings.Contains(string(w.content), "xk") {
		t.Errorf("the 11th number was looked up:\n%s", w.content)
	}
}

func TestAnswerMessageTypes(t *testing.T) {
	a := newTestAnswerer(t, mapLookup(t, demoRows))
	tests := []struct {
		name        string
		msgType     string
		event, key  string
		wantOutcome outcome
		wantSuccess bool
		wantPrefix  string
	}{
		{"subscribe", "event", "subscribe", "", outcomeWelcome, false, "欢迎关注"},
		{"subscribe from a QR code", "event", "subscribe", "qrscene_123", outcomeWelcome, false, "欢迎关注"},
		{"subscribe in another case", "event", "Subscribe", "", outcomeWelcome, false, "欢迎关注"},
		{"unsubscribe", "event", "unsubscribe", "", outcomeSuccess, true, ""},
		{"menu click", "event", "CLICK", "V1001", outcomeSuccess, true, ""},
		{"image", "image", "", "", outcomeHelp, false, "发送工件号"},
		{"voice", "voice", "", "", outcomeHelp, false, "发送工件号"},
		{"location", "location", "", "", outcomeHelp, false, "发送工件号"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &wechat.Message{ToUserName: []byte("gh"), FromUserName: []byte("oUser"),
				MsgType: []byte(tt.msgType), Event: []byte(tt.event), EventKey: []byte(tt.key)}
			w := new(work)
			o, success := a.answer(context.Background(), w, m, time.Now())
			if o != tt.wantOutcome || success != tt.wantSuccess {
				t.Fatalf("got %s success=%v, want %s success=%v", outcomeNames[o], success, outcomeNames[tt.wantOutcome], tt.wantSuccess)
			}
			if !strings.HasPrefix(string(w.content), tt.wantPrefix) {
				t.Errorf("got %q, want it to start with %q", w.content, tt.wantPrefix)
			}
		})
	}
}

func TestAnswerStartingAndUnavailable(t *testing.T) {
	notReady := newTestAnswerer(t, LookupFunc(func(context.Context, []byte) ([]byte, string, bool, error) {
		return nil, "", false, cache.ErrNotReady
	}))
	w := new(work)
	if o, _ := notReady.answer(context.Background(), w, textMessage("?18-546 18-547"), time.Now()); o != outcomeStarting || string(w.content) != DefaultStarting {
		t.Errorf("got %s %q, want starting %q", outcomeNames[o], w.content, DefaultStarting)
	}
	failing := newTestAnswerer(t, LookupFunc(func(context.Context, []byte) ([]byte, string, bool, error) {
		return nil, "", false, errors.New("read-through: deadline exceeded")
	}))
	if o, _ := failing.answer(context.Background(), w, textMessage("?18-546"), time.Now()); o != outcomeUnavailable || string(w.content) != DefaultUnavailable {
		t.Errorf("got %s %q, want unavailable %q", outcomeNames[o], w.content, DefaultUnavailable)
	}
}

func TestAnswerAccess(t *testing.T) {
	a := newTestAnswerer(t, mapLookup(t, demoRows))
	a.allowed = func(id []byte) bool { return string(id) == "oAllowed" }
	a.limiter = newLimiter(60, 2)
	now := time.Unix(1_700_000_000, 0)
	m := textMessage("?18-546")
	w := new(work)

	m.FromUserName = []byte("oStranger")
	if o, _ := a.answer(context.Background(), w, m, now); o != outcomeUnauthorised || string(w.content) != DefaultUnauthorised {
		t.Errorf("stranger: got %s %q, want unauthorised", outcomeNames[o], w.content)
	}
	m.FromUserName = []byte("oAllowed")
	for i := range 2 {
		if o, _ := a.answer(context.Background(), w, m, now); o != outcomeFound {
			t.Fatalf("message %d of a burst of 2: got %s, want found", i+1, outcomeNames[o])
		}
	}
	if o, _ := a.answer(context.Background(), w, m, now); o != outcomeRateLimited || string(w.content) != DefaultRateLimited {
		t.Errorf("third at once: got %s %q, want rate limited", outcomeNames[o], w.content)
	}
	if o, _ := a.answer(context.Background(), w, m, now.Add(time.Second)); o != outcomeFound {
		t.Errorf("one interval later: got %s, want found", outcomeNames[o])
	}
	// Subscribe events are welcomed whatever the limits: a newcomer must learn how to ask.
	m.MsgType, m.Event, m.FromUserName = []byte("event"), []byte("subscribe"), []byte("oStranger")
	if o, _ := a.answer(context.Background(), w, m, now); o != outcomeWelcome {
		t.Errorf("stranger subscribing: got %s, want welcome", outcomeNames[o])
	}
}

func TestAnswerAllocations(t *testing.T) {
	a := newTestAnswerer(t, mapLookup(t, demoRows))
	w := new(work)
	ctx := context.Background()
	for _, q := range []string{"?18-546", "？１８－５４６ a7-001", "?99-999"} {
		m := textMessage(q)
		now := time.Now()
		a.answer(ctx, w, m, now) // warm the buffers
		if n := testing.AllocsPerRun(100, func() { a.answer(ctx, w, m, now) }); n != 0 {
			t.Errorf("answer(%q) allocates %v times, want 0", q, n)
		}
	}
}

func BenchmarkAnswerFound(b *testing.B) {
	a := newTestAnswerer(b, mapLookup(b, demoRows))
	w := new(work)
	m := textMessage("?18-546")
	ctx := context.Background()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		a.answer(ctx, w, m, now)
	}
}

// FuzzAnswerQuery feeds the query language (tokenizer, normalisation, query selection,
// lookups, templates) arbitrary text, against the implicit query alone and against several
// (prefix, regex and catch-all queries): it never panics, answers at most MaxQueries numbers
// (each with at most a did-you-mean line) plus the "too many" note, keeps valid UTF-8
// valid, and is deterministic.
func FuzzAnswerQuery(f *testing.F) {
	for _, s := range []string{"?18-546", "？１８－５４６", "18-546,18-547\nA7-001", "帮助", "?", "help",
		"1 2 3 4 5 6 7 8 9 10 11 12", "a、b；c\u3000d", "?]]>\x01", "\xff\xfe", "",
		"#P-100 P-1", "＃", "WO0042 wo1", "?18-564"} {
		f.Add(s)
	}
	tmpl, err := NewTemplates(TemplateTexts{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	routes := issueQueries(f)
	catchAll := mustQuery(f, QuerySpec{Name: "any", ValueColumns: []string{"location"}})
	answerers := []*answerer{
		newTestAnswerer(f, mapLookup(f, demoRows)),
		newRoutedAnswerer(tmpl, routes[1], routes[2], Route{Query: catchAll, Cache: newFakeTable(f, catchAll, nil)}),
		newRoutedAnswerer(tmpl, routes...),
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, a := range answerers {
			w, r, now := new(work), a.routes.Load(), time.Now()
			out, o := a.answerQuery(context.Background(), w, r, nil, []byte(text), []byte("oFuzz"), now)
			again, o2 := a.answerQuery(context.Background(), w, r, nil, []byte(text), []byte("oFuzz"), now)
			if string(out) != string(again) || o != o2 {
				t.Fatalf("not deterministic for %q: %q (%v) then %q (%v)", text, out, o, again, o2)
			}
			if o == outcomeHelp {
				continue
			}
			if n := bytes.Count(out, []byte("\n")) + 1; n > 2*MaxQueries+1 {
				t.Fatalf("%d lines for %q, want at most %d", n, text, 2*MaxQueries+1)
			}
			if utf8.ValidString(text) && !utf8.Valid(out) {
				t.Fatalf("invalid UTF-8 answer %q for %q", out, text)
			}
		}
	})
}
