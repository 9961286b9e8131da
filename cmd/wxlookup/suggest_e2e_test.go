package main

import (
	"context"
	"testing"
)

// TestSuggestionsEndToEnd: a number not found is answered with up to three nearest keys of
// its query's table, as stored, through the whole service: a typo, two transpositions
// (distance 2 only because a transposition counts 1), a key asked in full-width lower case;
// nothing close gets no did-you-mean line. (It needs cache.Cache.Suggest, issue 15's cache
// half: with the stub that suggests nothing it fails.)
func TestSuggestionsEndToEnd(t *testing.T) {
	csv := writeFile(t, "locations.csv", "part_no,location\n18-546,车体新厂房3号\nA7-001,总装车间A区12排\nK56-497,涂装车间C区20排\nT72-104,车体新厂房23号货架第3层\n")
	cfg, err := LoadConfig("", envOf(map[string]string{"WXLOOKUP_CSV": csv, "WXLOOKUP_TOKEN": e2eToken}))
	if err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken}
	tests := []struct {
		name, ask, want string
	}{
		{"typo", "?18-547", "[18-547]未找到，请核对工件号。\n您是不是要找：18-546"},
		{"transpositions", "81-456", "[81-456]未找到，请核对工件号。\n您是不是要找：18-546"},
		{"full-width, lower case", "ｋ56-４９８", "[ｋ56-４９８]未找到，请核对工件号。\n您是不是要找：K56-497"},
		{"nothing close", "99-999", "[99-999]未找到，请核对工件号。"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := a.Ask(context.Background(), tt.ask)
			if err != nil || r.Content != tt.want {
				t.Errorf("got %q %v, want %q", r.Content, err, tt.want)
			}
		})
	}
}
