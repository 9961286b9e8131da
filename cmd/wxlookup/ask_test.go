package main

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
)

// TestAskFreshOpenIDAndRefusals: each `wxlookup ask` sends from a fresh test OpenID, so
// calls in a row are not rate-limited as one sender; with --from the same sender twice is,
// and a rate-limited (or otherwise refused) reply is an error, so scripts notice.
func TestAskFreshOpenIDAndRefusals(t *testing.T) {
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RateLimit, cfg.RateBurst = 1, 1 // one message a minute per sender
	m := startMain(t, cfg)
	url := webhookURL(m, "/wx")
	ask := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"ask", "--url", url}, args...), &out, &errOut, envOf(nil))
		return out.String(), errOut.String(), err
	}
	const found = "[18-546]的工作台位为[车体新厂房3号]\n"
	for i := range 3 {
		if out, errOut, err := ask("?18-546"); err != nil || out != found {
			t.Fatalf("ask %d without --from: got %q, %v (%s); want %q: each call a fresh sender", i, out, err, errOut, found)
		}
	}
	if out, _, err := ask("--from", "oScript", "?18-546"); err != nil || out != found {
		t.Fatalf("first ask --from oScript: got %q, %v", out, err)
	}
	out, _, err := ask("--from", "oScript", "?18-546")
	if err == nil || !strings.Contains(err.Error(), "rate_limited") {
		t.Fatalf("second ask --from oScript: got %q, %v; want an error saying rate_limited", out, err)
	}
	if exitCode(err) != 1 {
		t.Errorf("exit code %d, want 1", exitCode(err))
	}
	// A not-found answer is an answer, not a failure.
	if out, _, err := ask("?99-999"); err != nil || !strings.Contains(out, "未找到") {
		t.Errorf("ask for a missing number: got %q, %v; want the not-found reply and no error", out, err)
	}
}

// TestSubcommandHelp: --help (and -h) of every subcommand prints its usage to stdout and
// succeeds: exit status 0.
func TestSubcommandHelp(t *testing.T) {
	for _, cmd := range []string{"serve", "ask", "seed", "version"} {
		for _, flagName := range []string{"--help", "-h"} {
			t.Run(cmd+" "+flagName, func(t *testing.T) {
				var out, errOut bytes.Buffer
				err := run(context.Background(), []string{cmd, flagName}, &out, &errOut, envOf(nil))
				if err != nil {
					t.Fatalf("got %v (exit %d), want success", err, exitCode(err))
				}
				if !strings.Contains(out.String(), "usage: wxlookup "+cmd) {
					t.Errorf("stdout %q lacks the usage of %s", out.String(), cmd)
				}
			})
		}
	}
	if got := exitCode(flag.ErrHelp); got != 0 {
		t.Errorf("exitCode(flag.ErrHelp) = %d, want 0", got)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"ask", "--no-such-flag", "x"}, &out, &errOut, envOf(nil)); exitCode(err) != 2 {
		t.Errorf("ask with an unknown flag: exit %d, want 2", exitCode(err))
	}
}
