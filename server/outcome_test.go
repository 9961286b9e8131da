package server

import (
	"testing"
	"time"
)

// TestOutcomeHeader: every answered message carries X-Wxlookup-Outcome, the outcome its
// reply stands for, so a client (wxlookup ask) need not recognise reply texts, which are
// configurable; a retry carries the first answer's outcome.
func TestOutcomeHeader(t *testing.T) {
	s, err := New(Config{Token: testToken, RatePerMinute: 60, RateBurst: 4}, mapLookup(t, demoRows))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	now := time.Now()
	tests := []struct {
		name, text, want string
	}{
		{"found", "?18-546", "found"},
		{"not found", "?99-999", "not_found"},
		{"partial", "?18-546 99-999", "partial"},
		{"help", "帮助", "help"},
		{"rate limited", "?18-546", "rate_limited"}, // the fifth message of a burst of 4
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := handlerRequest(t, plainURINonce(now, freshNonce()), textXML(tt.text))
			h(ctx)
			if got := string(ctx.Response.Header.Peek(OutcomeHeader)); got != tt.want {
				t.Errorf("got %s %q, want %q (reply %s)", OutcomeHeader, got, tt.want, ctx.Response.Body())
			}
		})
	}
	msg, uri := textXML("?99-999"), plainURINonce(now, freshNonce())
	for i, want := range []string{"rate_limited", "rate_limited"} { // still over the limit; the retry repeats the first
		ctx := handlerRequest(t, uri, msg)
		h(ctx)
		if got := string(ctx.Response.Header.Peek(OutcomeHeader)); got != want {
			t.Errorf("message %d: got %q, want %q", i, got, want)
		}
	}
}
