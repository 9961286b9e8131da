package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"wxlookup/internal/freeport"
	"wxlookup/internal/logtest"
	"wxlookup/internal/mariadbtest"
	"wxlookup/wechat"
)

func TestMain(m *testing.M) { mariadbtest.Main(m) }

const (
	e2eToken  = "e2e-token"
	e2eAppID  = "wx2c2769f8efd9abc2"
	e2eKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	e2eOldKey = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	e2eCorp   = "ww1234567890abcdef"
)

// TestDemoMode is `make run` then `wxlookup ask "?18-546"`: no settings at all.
func TestDemoMode(t *testing.T) {
	// Registered first, so it runs after startMain's Close: nothing the service started
	// may outlive it. (fasthttp's clock goroutine is process-wide, started once.)
	t.Cleanup(func() {
		goleak.VerifyNone(t, goleak.IgnoreCurrent(),
			goleak.IgnoreTopFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
	})
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"ask", "--url", webhookURL(m, "/wx"), "?18-546"}, &out, &errOut, envOf(nil))
	if err != nil {
		t.Fatalf("ask: %v\n%s", err, errOut.String())
	}
	if got, want := out.String(), "[18-546]的工作台位为[车体新厂房3号]\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	var banner bytes.Buffer
	m.printBanner(&banner)
	if !strings.Contains(banner.String(), "ask --url "+webhookURL(m, "/wx")) {
		t.Errorf("banner has no ready ask line:\n%s", banner.String())
	}
}

// TestEndToEndMySQL: MariaDB → loader → server → signed requests in every mode → checked,
// decrypted replies; retries identical; bad input rejected and counted; metrics move.
func TestEndToEndMySQL(t *testing.T) {
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 2000)
	cfg := DefaultConfig()
	cfg.MySQLDSN, cfg.Token, cfg.AppID, cfg.AESKey, cfg.AESKeyPrevious = dsn, e2eToken, e2eAppID, e2eKey, e2eOldKey
	cfg.WeComCorpID, cfg.WeComToken, cfg.WeComAESKey = e2eCorp, "wecom-e2e", e2eKey
	cfg.AdminToken = "admin-secret"
	cfg.RefreshInterval = 200 * time.Millisecond
	cfg.requireEncryptionSet = true // WXLOOKUP_REQUIRE_ENCRYPTION=false: the plaintext asker too
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	ctx := context.Background()

	askers := []struct {
		name string
		a    Asker
	}{
		{"plaintext", Asker{URL: webhookURL(m, "/wx"), Token: e2eToken}},
		{"safe", Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, AppID: e2eAppID, AESKey: e2eKey}},
		{"safe with the previous key", Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, AppID: e2eAppID, AESKey: e2eOldKey}},
		{"wecom", Asker{URL: webhookURL(m, "/wecom"), Token: "wecom-e2e", WeComCorp: e2eCorp, AESKey: e2eKey, AgentID: "1000002"}},
	}
	for _, tt := range askers {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.a
			a.OpenID = "oE2E_" + strings.ReplaceAll(tt.name, " ", "_")
			r, err := a.Ask(ctx, "？ａ７－００１ 18-546 99-404")
			if err != nil {
				t.Fatal(err)
			}
			want := "[A7-001]的工作台位为[总装车间A区12排]\n[18-546]的工作台位为[车体新厂房3号]\n[99-404]未找到，请核对工件号。"
			if r.Content != want {
				t.Errorf("got %q, want %q", r.Content, want)
			}
			if r.Encrypted != (a.AESKey != "") {
				t.Errorf("encrypted=%v, want %v", r.Encrypted, a.AESKey != "")
			}
		})
	}

	// A change in MySQL reaches the cache on the loader's schedule, and the replies.
	if _, err := db.Exec("UPDATE workpiece_location SET location = '新位置' WHERE part_no = '18-546'"); err != nil {
		t.Fatal(err)
	}
	waitLine(t, m, "location", "18-546", "[18-546]的工作台位为[新位置]")
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, OpenID: "oE2E_change"}
	if r, err := a.Ask(ctx, "18-546"); err != nil || r.Content != "[18-546]的工作台位为[新位置]" {
		t.Fatalf("after the update: got %q %v, want %q", r.Content, err, "[18-546]的工作台位为[新位置]")
	}

	// A retry of one message gets the same reply bytes.
	msg := wechat.AppendTextMessage(nil, []byte("gh"), []byte("oE2E_retry"), time.Now().Unix(), []byte("?18-546"), 424242)
	retry := a
	retry.OpenID = "oE2E_retry"
	first, err := retry.Send(ctx, msg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	again, err := retry.Send(ctx, msg, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Raw, again.Raw) {
		t.Errorf("retry reply differs:\n%s\n%s", first.Raw, again.Raw)
	}
	if v := metricValue(t, m, "wxlookup_duplicates_total"); v != "1" {
		t.Errorf("wxlookup_duplicates_total = %q, want 1", v)
	}

	// Bad input is refused and counted.
	bad := Asker{URL: webhookURL(m, "/wx"), Token: "wrong-token", OpenID: "oE2E_bad"}
	if _, err := bad.Ask(ctx, "?18-546"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("wrong token: got %v, want a 403", err)
	}
	if v := metricValue(t, m, `wxlookup_rejected_total{reason="signature"}`); v != "1" {
		t.Errorf(`rejected{signature} = %q, want 1`, v)
	}
	wrongKey := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, AppID: e2eAppID, AESKey: "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut", OpenID: "oE2E_bad"}
	if _, err := wrongKey.Ask(ctx, "?18-546"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("wrong key: got %v, want a 400", err)
	}
	if v := metricValue(t, m, `wxlookup_rejected_total{reason="decrypt"}`); v != "1" {
		t.Errorf(`rejected{decrypt} = %q, want 1`, v)
	}

	// Metrics and admin routes.
	if v := metricValue(t, m, `wxlookup_requests_total{kind="text",outcome="partial",route="oa"}`); v != "3" {
		t.Errorf(`requests{oa,text,partial} = %q, want 3`, v)
	}
	if v := metricValue(t, m, `wxlookup_cache_complete{query="location"}`); v != "1" {
		t.Errorf(`wxlookup_cache_complete{query="location"} = %q, want 1`, v)
	}
	if code, _ := adminGet(t, m, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d, want 200", code)
	}
	if code, body := adminGet(t, m, "/status"); code != http.StatusOK || !strings.Contains(body, "Served from memory") {
		t.Errorf("/status = %d", code)
	}
	for _, secret := range []string{e2eKey, e2eOldKey, "admin-secret", e2eToken} {
		for _, path := range []string{"/metrics", "/status", "/status.json"} {
			if _, body := adminGet(t, m, path); strings.Contains(body, secret) {
				t.Errorf("%s shows a secret", path)
			}
		}
	}
	// Reload needs the bearer token.
	req, _ := http.NewRequest(http.MethodPost, "http://"+m.AdminAddr.String()+"/admin/reload", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("reload without token: %d, want 401", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPost, "http://"+m.AdminAddr.String()+"/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"entries":2000`) {
		t.Errorf("reload: %d %s, want 200 with 2000 entries", resp.StatusCode, body)
	}
}

// TestDrainHandsOver: Drain closes the listening socket at once (a process sharing the
// port gets every new connection) but keeps answering on open connections, telling each
// client to reconnect, and returns when none is left.
func TestDrainHandsOver(t *testing.T) {
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	a := Asker{URL: webhookURL(m, "/wx"), Token: "demo", OpenID: "oDrain", Client: hc}
	if r, err := a.Ask(context.Background(), "?18-546"); err != nil || r.Content != "[18-546]的工作台位为[车体新厂房3号]" {
		t.Fatalf("before Drain: %q %v", r.Content, err)
	}
	drained := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { drained <- m.Drain(ctx) }()

	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.WebhookAddr.String(), time.Second)
		if err != nil {
			break // the socket is closed: new connections go to the next process
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("Drain left the listening socket open")
		}
		runtime.Gosched()
	}
	// The client's kept-alive connection is still answered.
	if r, err := a.Ask(context.Background(), "?18-546"); err != nil || r.Content != "[18-546]的工作台位为[车体新厂房3号]" {
		t.Fatalf("during Drain, on the open connection: %q %v", r.Content, err)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v, want nil once the client reconnected elsewhere", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Drain did not return after the client's connection closed")
	}
}

// TestListenWhenReady: with WXLOOKUP_LISTEN_WHEN_READY the webhook port stays closed (so
// nginx or the kernel send requests to a replica that can answer them) until the first
// load, while the admin listener already reports 503 on /readyz; then Run returns and the
// webhook answers from the loaded table.
func TestListenWhenReady(t *testing.T) {
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 10)
	// The table is locked: the warm waits for the lock until UNLOCK TABLES below.
	lock, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(context.Background(), "LOCK TABLES workpiece_location WRITE"); err != nil {
		t.Fatal(err)
	}
	port, err := freeport.Pick() // not port 0: the listener opens only after the first load
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	cfg := DefaultConfig()
	cfg.MySQLDSN, cfg.Token, cfg.ListenWhenReady, cfg.RefreshInterval = dsn, e2eToken, true, 100*time.Millisecond
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.AdminListen = addr, "127.0.0.1:0"
	m := NewMain(cfg)
	log := &logtest.Buffer{}
	m.Logger = slog.New(slog.NewTextHandler(log, nil))
	ran := make(chan error, 1)
	go func() { ran <- m.Run(context.Background()) }()
	t.Cleanup(func() {
		<-ran
		m.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), "waiting for the first load") {
		if time.Now().After(deadline) {
			t.Fatalf("no wait logged:\n%s", log.String())
		}
		runtime.Gosched()
	}
	// The log line is written after AdminAddr is set; the buffer's lock orders the two.
	if code, _ := adminGet(t, m, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the first load = %d, want 503", code)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the webhook port accepts connections before the first load")
	}
	select {
	case err := <-ran:
		t.Fatalf("Run returned before the first load: %v", err)
	default:
	}

	if _, err := lock.ExecContext(context.Background(), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		ran <- err
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the first load")
	}
	waitLine(t, m, "location", "18-546", "[18-546]的工作台位为[车体新厂房3号]")
	a := Asker{URL: "http://" + addr + "/wx", Token: e2eToken, OpenID: "oReady"}
	if r, err := a.Ask(context.Background(), "?18-546"); err != nil || r.Content != "[18-546]的工作台位为[车体新厂房3号]" {
		t.Fatalf("after the first load: got %q %v, want %q", r.Content, err, "[18-546]的工作台位为[车体新厂房3号]")
	}
}

// TestStartsWithMySQLDown: the service starts and answers while MySQL is down ("starting
// up", /readyz 503), and becomes ready on its own when MySQL comes back.
func TestStartsWithMySQLDown(t *testing.T) {
	srv := mariadbtest.Start(t)
	dsn, _ := seededDB(t, srv, 100)
	srv.Stop(t)

	cfg := DefaultConfig()
	cfg.MySQLDSN, cfg.Token = dsn, e2eToken
	cfg.RefreshInterval = 100 * time.Millisecond
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	m := NewMain(cfg)
	m.Logger = testLogger(t)
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, OpenID: "oE2E_down"}
	r, err := a.Ask(context.Background(), "?18-546")
	if err != nil {
		t.Fatal(err)
	}
	if r.Content != "系统正在启动，请稍后再试。" {
		t.Errorf("with MySQL down at start: got %q, want the starting-up text", r.Content)
	}
	if code, _ := adminGet(t, m, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with MySQL down: %d, want 503", code)
	}

	srv.Restart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatalf("not ready after MySQL came back: %v", err)
	}
	if r, err := a.Ask(context.Background(), "?18-546"); err != nil || r.Content != "[18-546]的工作台位为[车体新厂房3号]" {
		t.Errorf("after MySQL came back: got %q, %v", r.Content, err)
	}
	if code, _ := adminGet(t, m, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after MySQL came back: %d, want 200", code)
	}
}
