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
