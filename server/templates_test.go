package server

import (
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
	if tmpl.notFound.pieces == nil {
		t.Errorf("not found template of text and fields did not take the fast path")
	}
	if got, want := string(tmpl.notFound.appendTo(nil, []byte("X"), []byte("o1"), 10)), "没有 X（o1）"; got != want {
		t.Errorf("not found: got %q, want %q", got, want)
	}
	if tmpl.help.pieces != nil {
		t.Errorf("help template with {{if}} took the fast path")
	}
	if got, want := string(tmpl.help.appendTo(nil, nil, []byte("o1"), 10)), "hi o1"; got != want {
		t.Errorf("help: got %q, want %q", got, want)
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
		{"unknown field in not found", TemplateTexts{NotFound: "{{.Value}}"}, "template not_found"},
		{"welcome syntax", TemplateTexts{Welcome: "{{end}}"}, "template welcome"},
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
		{"{{.Column.nope}}|{{.Key}}", false}, // not a configured column: text/template decides
		{"{{index .Values 1}}", false},
		{"{{.Values}}", false},
		{"{{if .Value}}{{.Value}}{{else}}-{{end}}", false},
		{"{{.Key | printf \"%q\"}}", false},
	}
	for _, tt := range tests {
		tmpl, err := NewTemplates(TemplateTexts{Found: tt.src}, columns)
		if err != nil {
			t.Fatalf("%q: %v", tt.src, err)
		}
		if got := tmpl.foundPieces != nil; got != tt.fast {
			t.Errorf("%q: fast path %v, want %v", tt.src, got, tt.fast)
		}
		for _, vals := range rows {
			b, err := tmpl.render(tmpl.data("18-546", vals))
			want := string(b)
			if err != nil {
				want = "[18-546] " + strings.Join(vals, " ")
			}
			if got := string(tmpl.AppendFound([]byte("prefix:"), "18-546", vals)); got != "prefix:"+want {
				t.Errorf("%q with %q: AppendFound %q, want %q", tt.src, vals, got, "prefix:"+want)
			}
		}
	}
}

// BenchmarkAppendFound is the loader's cost to render one row: the default template on the
// fast path, and the same output through text/template (what every row cost before the
// fast path, and what a template beyond the fast path's reach still costs).
func BenchmarkAppendFound(b *testing.B) {
	for _, bc := range []struct{ name, src string }{
		{"fast", DefaultFound},
		{"text-template", "[{{.Key}}]的工作台位为[{{index .Values 0}}]"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tmpl, err := NewTemplates(TemplateTexts{Found: bc.src}, []string{"location"})
			if err != nil {
				b.Fatal(err)
			}
			vals := []string{"车体新厂房3号"}
			if got := string(tmpl.AppendFound(nil, "18-546", vals)); got != "[18-546]的工作台位为[车体新厂房3号]" {
				b.Fatalf("rendered %q", got)
			}
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				buf = tmpl.AppendFound(buf[:0], "18-546", vals)
			}
		})
	}
}
