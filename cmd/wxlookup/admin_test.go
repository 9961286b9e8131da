package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"wxlookup/internal/mariadbtest"
)

// TestAdminListenNeedsToken: an admin listener other machines can reach needs
// WXLOOKUP_ADMIN_TOKEN; start-up refuses it without, in one line naming both settings.
func TestAdminListenNeedsToken(t *testing.T) {
	tests := []struct {
		name   string
		listen string
		token  string
		ok     bool
	}{
		{"default loopback", "", "", true},
		{"ipv4 loopback", "127.0.0.1:9191", "", true},
		{"other ipv4 loopback", "127.0.0.2:9191", "", true},
		{"ipv6 loopback", "[::1]:9191", "", true},
		{"localhost", "localhost:9191", "", true},
		{"every interface", ":9090", "", false},
		{"every ipv4 interface", "0.0.0.0:9090", "", false},
		{"every ipv6 interface", "[::]:9090", "", false},
		{"a lan address", "10.1.2.3:9090", "", false},
		{"a host name", "plant-gw:9090", "", false},
		{"every interface with a token", "0.0.0.0:9090", "a-long-admin-token", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.listen != "" {
				env["WXLOOKUP_ADMIN_LISTEN"] = tt.listen
			}
			if tt.token != "" {
				env["WXLOOKUP_ADMIN_TOKEN"] = tt.token
			}
			_, err := LoadConfig("", envOf(env))
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v, want it accepted", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("admin on %s without a token: got no error, want a refusal", tt.listen)
			}
			msg := err.Error()
			if !strings.Contains(msg, "WXLOOKUP_ADMIN_LISTEN") || !strings.Contains(msg, "WXLOOKUP_ADMIN_TOKEN") || strings.Contains(msg, "\n") {
				t.Errorf("got %q, want one line naming WXLOOKUP_ADMIN_LISTEN and WXLOOKUP_ADMIN_TOKEN", msg)
			}
		})
	}
}

// TestBannerShowsAdminAddress: the banner names the admin listener's real address: the
// bound port, and for a listener on every interface that it is one and needs the token.
func TestBannerShowsAdminAddress(t *testing.T) {
	tests := []struct {
		name  string
		admin *net.TCPAddr
		token string
		want  []string
		not   []string
	}{
		{"loopback", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9191}, "",
			[]string{"admin:   http://127.0.0.1:9191/status\n"}, []string{"every interface", "WXLOOKUP_ADMIN_TOKEN"}},
		{"ipv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 9191}, "",
			[]string{"admin:   http://[::1]:9191/status\n"}, []string{"every interface"}},
		{"every interface", &net.TCPAddr{IP: net.IPv4zero, Port: 9090}, "t0ken-value",
			[]string{"admin:   http://127.0.0.1:9090/status\n", "0.0.0.0:9090", "every interface", "WXLOOKUP_ADMIN_TOKEN"}, []string{"t0ken-value"}},
		{"a lan address", &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 9090}, "t0ken-value",
			[]string{"admin:   http://10.1.2.3:9090/status\n", "WXLOOKUP_ADMIN_TOKEN"}, []string{"t0ken-value", "every interface"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Path, cfg.Token, cfg.AdminToken = "/wx", "demo", tt.token
			m := NewMain(cfg)
			m.WebhookAddr, m.AdminAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, tt.admin
			var b bytes.Buffer
			m.printBanner(&b)
			for _, want := range tt.want {
				if !strings.Contains(b.String(), want) {
					t.Errorf("banner lacks %q:\n%s", want, b.String())
				}
			}
			for _, not := range tt.not {
				if strings.Contains(b.String(), not) {
					t.Errorf("banner has %q:\n%s", not, b.String())
				}
			}
		})
	}
}

// TestStaleAfterSetting: WXLOOKUP_STALE_AFTER defaults to 60s, must be positive and longer
// than the refresh interval, and a bad value is one line naming it.
func TestStaleAfterSetting(t *testing.T) {
	tests := []struct {
		name, value string
		want        time.Duration // 0: refused
	}{
		{"default", "", time.Minute},
		{"set", "2m", 2 * time.Minute},
		{"zero", "0", 0},
		{"not a duration", "soon", 0},
		{"not longer than the refresh interval", "1s", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.value != "" {
				env["WXLOOKUP_STALE_AFTER"] = tt.value
			}
			c, err := LoadConfig("", envOf(env))
			if tt.want == 0 {
				if err == nil || !strings.Contains(err.Error(), "WXLOOKUP_STALE_AFTER") {
					t.Fatalf("got %v, want an error naming WXLOOKUP_STALE_AFTER", err)
				}
				return
			}
			if err != nil || c.StaleAfter != tt.want {
				t.Fatalf("got %s, %v; want %s", c.StaleAfter, err, tt.want)
			}
		})
	}
}

// TestReadyzTurnsWhenStale: the whole service with MySQL stopped after the first load:
// once no refresh has succeeded for WXLOOKUP_STALE_AFTER, /readyz answers 503 with the
// last error and the status page is red; replies go on from the cache meanwhile.
func TestReadyzTurnsWhenStale(t *testing.T) {
	srv := mariadbtest.Start(t)
	dsn, _ := seededDB(t, srv, 100)
	cfg := DefaultConfig()
	cfg.MySQLDSN, cfg.Token, cfg.RefreshInterval, cfg.StaleAfter = dsn, e2eToken, 100*time.Millisecond, time.Second
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	if code, body := adminGet(t, m, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after the first load: %d %q", code, body)
	}
	srv.Stop(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := adminGet(t, m, "/readyz")
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "stale") || !strings.Contains(body, "last error") {
				t.Errorf("/readyz while stale: %q, want it to say stale and the last error", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q 30 s after MySQL stopped, with WXLOOKUP_STALE_AFTER=1s", code, body)
		}
		runtime.Gosched()
	}
	if _, page := adminGet(t, m, "/status"); !strings.Contains(page, `<span class="badge bad">stale</span>`) {
		t.Errorf("/status is not red while stale")
	}
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, OpenID: "oStale"}
	if r, err := a.Ask(context.Background(), "?18-546"); err != nil || r.Content != "[18-546]的工作台位为[车体新厂房3号]" {
		t.Errorf("while stale: got %q, %v; want the answer from the cache", r.Content, err)
	}
}
