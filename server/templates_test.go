package server

import (
	"bytes"
	"strings"
	"testing"
)

func TestTemplatesDefaultFound(t *testing.T) {
	tmpl, err := NewTemplates(TemplateTexts{}, []string{"location"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(tmpl.Found("18-546", []string{"车体新厂房3号"})), "[18-546]的工作台位为[车体新厂房3号]"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestTemplatesCustom(t *testing.T) {
	tmpl, err := NewTemplates(TemplateTexts{
		Found:    `{{.Key}}: {{.Column.location}} / {{index .Values 1}}`,
		NotFound: `没有 {{.Key}}（{{.OpenID}}）`,
		Help:     `{{if .OpenID}}hi {{.OpenID}}{{end}}`,
	}, []string{"location", "shelf"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(tmpl.Found("A-1", []string{"车间", "3层"})), "A-1: 车间 / 3层"; got != want {
		t.Errorf("found: got %q, want %q", got, want)
	}
	nf := tmpl.location.notFound
	if nf.pieces == nil {
		t.Errorf("not found template of text and fields did not take the fast path")
	}
	if got, want := string(nf.append(nil, &vars{asked: []byte("X"), openID: []byte("o1")})), "没有 X（o1）"; got != want {
		t.Errorf("not found: got %q, want %q", got, want)
	}
	if tmpl.help.pieces != nil {
		t.Errorf("help template with {{if}} took the fast path")
	}
	if got, want := string(tmpl.help.append(nil, &vars{openID: []byte("o1")})), "hi o1"; got != want {
		t.Errorf("help: got %q, want %q", got, want)
	}
}

// TestTemplateFieldsOfQueries: a found template's {{.Query}} is the query's name; a
// not-found template's {{.Query}} and {{.Key}} are the number as asked, and
// {{.Suggestions}} the nearest keys joined by 、 — on the fast path and through
// text/template alike.
func TestTemplateFieldsOfQueries(t *testing.T) {
	tests := []struct {
		name, found, notFound string
		wantFound, wantNF     string
	}{
		{"fast", "{{.Query}}: [{{.Key}}] {{.Column.qty}}件 {{.Column.bin}}", "未找到[{{.Query}}] {{.Suggestions}}",
			"stock: [P-100] 12件 B-3", "未找到[p-１00] P-100、P-110"},
		{"text/template", "{{.Query | printf \"%s\"}}: [{{.Key}}] {{index .Values 0}}件 {{.Column.bin}}", "{{if .Suggestions}}未找到[{{.Query}}] {{.Suggestions}}{{end}}",
			"stock: [P-100] 12件 B-3", "未找到[p-１00] P-100、P-110"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := NewQuery(QuerySpec{Name: "stock", ValueColumns: []string{"qty", "bin"}, Found: tt.found, NotFound: tt.notFound})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(q.AppendFound(nil, "P-100", []string{"12", "B-3"})); got != tt.wantFound {
				t.Errorf("found: got %q, want %q", got, tt.wantFound)
			}
			v := vars{asked: []byte("p-１00"), suggestions: []string{"P-100", "P-110"}}
			if got := string(q.notFound.append(nil, &v)); got != tt.wantNF {
				t.Errorf("not found: got %q, want %q", got, tt.wantNF)
			}
			if !q.ownSuggestions {
				t.Errorf("the not-found template shows {{.Suggestions}}, but the query would add the did-you-mean line too")
			}
		})
	}
}

func TestTemplatesInvalidNamesSetting(t *testing.T) {
	tests := []struct {
		name  string
		texts TemplateTexts
		want  string
	}{
		{"syntax", TemplateTexts{Found: "{{.Key"}, "template found"},
		{"unknown field in found", TemplateTexts{Found: "{{.Nope}}"}, "template found"},
		{"missing column", TemplateTexts{Found: "{{.Key}} {{.Column.shelf}}"}, `template found: {{.Column.shelf}}: no value column "shelf" (value_columns: location)`},
		{"missing column in a branch not taken", TemplateTexts{Found: `{{if eq .Key "x"}}{{$.Column.bay}}{{end}}`}, `no value column "bay"`},
		{"unknown field in not found", TemplateTexts{NotFound: "{{.Value}}"}, "template not_found"},
		{"welcome syntax", TemplateTexts{Welcome: "{{end}}"}, "template welcome"},
		{"did you mean", TemplateTexts{DidYouMean: "{{.Sugestions}}"}, "template did_you_mean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTemplates(tt.texts, []string{"location"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestFoundFastPathMatchesTextTemplate renders rows through the found template's fast path
// and through text/template itself: the two must agree byte for byte, also for rows with
// fewer values than columns.
func TestFoundFastPathMatchesTextTemplate(t *testing.T) {
	columns := []string{"location", "shelf"}
	rows := [][]string{{"车体新厂房3号", "A-1"}, {"only one"}, {}, {"", "x"}}
	tests := []struct {
		src  string
		fast bool
	}{
		{"", true}, // the default
		{"{{.Key}} → {{.Column.shelf}} ({{.Column.location}}) {{.Value}}", true},
		{"plain text only", true},
		{"{{.Key}}{{.Key}}", true},
		{"{{.Query}}:{{.Key}}", true},
		{"{{index .Values 1}}", false},
		{"{{.Values}}", false},
		{"{{if .Value}}{{.Value}}{{else}}-{{end}}", false},
		{"{{.Key | printf \"%q\"}}", false},
	}
	for _, tt := range tests {
		q, err := NewQuery(QuerySpec{Name: "location", ValueColumns: columns, Found: tt.src})
		if err != nil {
			t.Fatalf("%q: %v", tt.src, err)
		}
		if got := q.found.pieces != nil; got != tt.fast {
			t.Errorf("%q: fast path %v, want %v", tt.src, got, tt.fast)
		}
		for _, vals := range rows {
			var b bytes.Buffer
			want := "[18-546] " + strings.Join(vals, " ")
			if err := q.found.tmpl.Execute(&b, q.found.foundData(&vars{stored: "18-546", values: vals})); err == nil {
				want = b.String()
			}
			if got := string(q.AppendFound([]byte("prefix:"), "18-546", vals)); got != "prefix:"+want {
				t.Errorf("%q with %q: AppendFound %q, want %q", tt.src, vals, got, "prefix:"+want)
			}
		}
	}
}

// TestMessageFastPathMatchesTextTemplate: the message templates' fields render the same
// on the fast path as through text/template.
func TestMessageFastPathMatchesTextTemplate(t *testing.T) {
	v := vars{asked: []byte("18-564"), suggestions: []string{"18-546", "18-565"}, openID: []byte("oU")}
	for _, src := range []string{"{{.Key}}|{{.Query}}|{{.Suggestions}}|{{.OpenID}}|{{.Max}}", "{{.Suggestions}}", "x"} {
		fast, err := compileTemplate("t", src, nil)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := compileTemplate("t", "{{if true}}"+src+"{{end}}", nil)
		if err != nil {
			t.Fatal(err)
		}
		if fast.pieces == nil || slow.pieces != nil {
			t.Fatalf("%q: fast path %v and %v, want true and false", src, fast.pieces != nil, slow.pieces != nil)
		}
		if got, want := string(fast.append(nil, &v)), string(slow.append(nil, &v)); got != want {
			t.Errorf("%q: fast path %q, text/template %q", src, got, want)
		}
	}
}

// BenchmarkAppendFound is the loader's cost to render one row: the default template on the
// fast path, and the same output through text/template (what a template beyond the fast
// path's reach costs).
func BenchmarkAppendFound(b *testing.B) {
	for _, bc := range []struct{ name, src string }{
		{"fast", DefaultFound},
		{"text-template", "[{{.Key}}]的工作台位为[{{index .Values 0}}]"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			q, err := NewQuery(QuerySpec{Name: "location", ValueColumns: []string{"location"}, Found: bc.src})
			if err != nil {
				b.Fatal(err)
			}
			vals := []string{"车体新厂房3号"}
			if got := string(q.AppendFound(nil, "18-546", vals)); got != "[18-546]的工作台位为[车体新厂房3号]" {
				b.Fatalf("rendered %q", got)
			}
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				buf = q.AppendFound(buf[:0], "18-546", vals)
			}
		})
	}
}
