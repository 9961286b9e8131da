package baseline

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
	"wxlookup/wechat"
)

func TestMain(m *testing.M) { mariadbtest.Main(m) }

const token = "basetoken"

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	dsn := mariadbtest.Shared(t).CreateDatabase(t)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ConfigurePool(db, 4)
	ctx := context.Background()
	if err := store.Seed(ctx, db, 100); err != nil {
		t.Fatal(err)
	}
	h, err := New(ctx, db, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func signedURL(srv *httptest.Server, sign string) string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	if sign == "" {
		sign = wechat.Signature(token, ts, "123")
	}
	return srv.URL + "/wx?" + url.Values{"signature": {sign}, "timestamp": {ts}, "nonce": {"123"}, "echostr": {"hello"}}.Encode()
}

func post(t *testing.T, srv *httptest.Server, sign string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(signedURL(srv, sign), "text/xml", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBaselineAnswers(t *testing.T) {
	srv := newServer(t)
	k5, v5 := store.DemoRow(5)
	tests := []struct {
		name, content, want string
	}{
		{"found", "?18-546", "[18-546]的工作台位为[车体新厂房3号]"},
		{"found, full-width ?", "？" + k5, "[" + k5 + "]的工作台位为[" + v5 + "]"},
		{"case-insensitive", "?a7-001", "[A7-001]的工作台位为[总装车间A区12排]"},
		{"not found", "?ZZ-999", "[ZZ-999]未找到，请核对工件号。"},
		{"help", "帮助", helpText},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := wechat.AppendTextMessage(nil, []byte("gh_plant"), []byte("oWorker"), time.Now().Unix(), []byte(tt.content), int64(i))
			status, body := post(t, srv, "", msg)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			var m wechat.Message
			if err := m.Parse([]byte(body)); err != nil {
				t.Fatalf("reply %q: %v", body, err)
			}
			if got := string(m.Content); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if string(m.ToUserName) != "oWorker" || string(m.FromUserName) != "gh_plant" || !m.IsType("text") {
				t.Errorf("reply to %q from %q type %q, want a text to oWorker from gh_plant", m.ToUserName, m.FromUserName, m.MsgType)
			}
		})
	}
}

func TestBaselineRefuses(t *testing.T) {
	srv := newServer(t)
	msg := wechat.AppendTextMessage(nil, []byte("gh"), []byte("o"), 1, []byte("?18-546"), 1)
	if status, _ := post(t, srv, strings.Repeat("0", 40), msg); status != http.StatusForbidden {
		t.Errorf("bad signature: status %d, want 403", status)
	}
	if status, _ := post(t, srv, "", []byte("<xml><unclosed>")); status != http.StatusBadRequest {
		t.Errorf("bad XML: status %d, want 400", status)
	}
	resp, err := http.Get(signedURL(srv, ""))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "hello" {
		t.Errorf("URL verification: %d %q, want 200 \"hello\"", resp.StatusCode, b)
	}
}
