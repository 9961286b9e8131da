// Package baseline is the seed baseline of the benchmarks: the design the plant had before
// wxlookup, written as a plant's developer would with the standard library — net/http,
// encoding/xml and one MySQL query per message through database/sql with a connection
// pool. It answers plaintext Official Account text messages with the same texts as
// wxlookup's defaults, so the two can be driven by the same requests.
//
// It keeps its own SQL on purpose: it stands for the old system and shares nothing with
// wxlookup's store, cache or server packages.
package baseline

import (
	"context"
	"crypto/sha1"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Pool settings: enough connections to keep both cores of a small server busy with point
// reads, recycled well before MySQL's wait_timeout.
const (
	DefaultMaxOpenConns = 32
	connMaxLifetime     = 3 * time.Minute
)

// The reply texts, as wxlookup's defaults.
const (
	helpText = "发送工件号查询工作台位，例如：?18-546\n一次可查多个，用空格、逗号或换行分开（最多10个）。"
	found    = "[%s]的工作台位为[%s]"
	notFound = "[%s]未找到，请核对工件号。"
)

// lookupSQL reads one workpiece's location; the key column's case-insensitive collation
// lets ?a7-001 find A7-001.
const lookupSQL = "SELECT part_no, location FROM workpiece_location WHERE part_no = ?"

// ConfigurePool applies the baseline's pool settings to db; maxOpen ≤ 0 takes
// DefaultMaxOpenConns.
func ConfigurePool(db *sql.DB, maxOpen int) {
	if maxOpen <= 0 {
		maxOpen = DefaultMaxOpenConns
	}
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	db.SetConnMaxLifetime(connMaxLifetime)
}

// Handler answers the Official Account webhook. It is safe for concurrent use.
type Handler struct {
	token string
	stmt  *sql.Stmt
	log   *slog.Logger
}

// New prepares the lookup statement on db and returns the handler for token.
func New(ctx context.Context, db *sql.DB, token string, log *slog.Logger) (*Handler, error) {
	if token == "" {
		return nil, errors.New("baseline: empty token")
	}
	if log == nil {
		log = slog.Default()
	}
	stmt, err := db.PrepareContext(ctx, lookupSQL)
	if err != nil {
		return nil, fmt.Errorf("baseline: prepare lookup: %w", err)
	}
	return &Handler{token: token, stmt: stmt, log: log}, nil
}

// Close releases the prepared statement.
func (h *Handler) Close() error { return h.stmt.Close() }

type cdata struct {
	Value string `xml:",cdata"`
}

type inbound struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string
	FromUserName string
	CreateTime   int64
	MsgType      string
	Content      string
	MsgID        int64 `xml:"MsgId"`
}

type reply struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   cdata
	FromUserName cdata
	CreateTime   int64
	MsgType      cdata
	Content      cdata
}

// ServeHTTP answers URL verification (GET) and text messages (POST).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !h.signed(q.Get("signature"), q.Get("timestamp"), q.Get("nonce")) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodGet:
		io.WriteString(w, q.Get("echostr"))
		return
	case http.MethodPost:
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var msg inbound
	if err := xml.Unmarshal(body, &msg); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	text := helpText
	if msg.MsgType == "text" {
		if text, err = h.answer(r.Context(), msg.Content); err != nil {
			h.log.Error("baseline: lookup failed", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
	}
	out, err := xml.Marshal(reply{ToUserName: cdata{msg.FromUserName}, FromUserName: cdata{msg.ToUserName},
		CreateTime: time.Now().Unix(), MsgType: cdata{"text"}, Content: cdata{text}})
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Write(out)
}

// answer looks one workpiece number up.
func (h *Handler) answer(ctx context.Context, content string) (string, error) {
	q := strings.TrimSpace(content)
	q = strings.TrimPrefix(strings.TrimPrefix(q, "?"), "？")
	q = strings.TrimSpace(q)
	if q == "" || q == "帮助" || strings.EqualFold(q, "help") {
		return helpText, nil
	}
	var key, location string
	err := h.stmt.QueryRowContext(ctx, q).Scan(&key, &location)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Sprintf(notFound, q), nil
	case err != nil:
		return "", err
	}
	return fmt.Sprintf(found, key, location), nil
}

// signed checks WeChat's signature: sha1 of the sorted token, timestamp and nonce.
func (h *Handler) signed(signature, timestamp, nonce string) bool {
	parts := []string{h.token, timestamp, nonce}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	want := hex.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(want), []byte(signature)) == 1
}
