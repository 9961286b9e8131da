package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestLoadConfigDemoDefaults(t *testing.T) {
	c, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Demo || c.Token != "demo" {
		t.Errorf("got demo=%v token=%q, want demo mode with token demo", c.Demo, c.Token)
	}
	if c.Listen != ":8080" || c.Path != "/wx" || c.AdminListen != "127.0.0.1:9090" || c.RefreshInterval != time.Second ||
		c.ReconcileInterval != 10*time.Second || c.CacheMaxBytes != 512<<20 || c.TimestampSkew != 5*time.Minute ||
		c.ReloadRate != 250_000 ||
		c.Table != "workpiece_location" || c.KeyColumn != "part_no" || strings.Join(c.ValueColumns, ",") != "location" || c.UpdatedColumn != "updated_at" {
		t.Errorf("defaults differ from SPEC section 4: %+v", c)
	}
}

func TestLoadConfigFileAndEnvironment(t *testing.T) {
	path := writeFile(t, "wxlookup.yaml", `
listen: 127.0.0.1:8181
token: from-file
mysql_dsn: ro@tcp(127.0.0.1:3306)/plant
value_columns: [location, shelf]
refresh_interval: 2s
cache_max_bytes: 1GiB
templates:
  found: "{{.Key}} → {{.Value}}"
`)
	c, err := LoadConfig(path, envOf(map[string]string{"WXLOOKUP_TOKEN": "from-env", "WXLOOKUP_REFRESH_INTERVAL": "3s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Token != "from-env" {
		t.Errorf("token %q: the environment must win over the file", c.Token)
	}
	if c.RefreshInterval != 3*time.Second || c.Listen != "127.0.0.1:8181" || c.CacheMaxBytes != 1<<30 {
		t.Errorf("got refresh %s listen %q max %d", c.RefreshInterval, c.Listen, c.CacheMaxBytes)
	}
	if got := strings.Join(c.ValueColumns, ","); got != "location,shelf" {
		t.Errorf("value columns %q, want location,shelf", got)
	}
	if c.Templates.Found != "{{.Key}} → {{.Value}}" || c.Demo {
		t.Errorf("found template %q demo %v", c.Templates.Found, c.Demo)
	}
}

func TestLoadConfigErrorsNameTheSetting(t *testing.T) {
	secret := "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH" // 44 chars: invalid
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{"token required outside demo", "", map[string]string{"WXLOOKUP_MYSQL_DSN": "u@tcp(h)/d"}, "WXLOOKUP_TOKEN"},
		{"bad duration", "", map[string]string{"WXLOOKUP_REFRESH_INTERVAL": "soon"}, "WXLOOKUP_REFRESH_INTERVAL"},
		{"bad size", "", map[string]string{"WXLOOKUP_CACHE_MAX_BYTES": "lots"}, "WXLOOKUP_CACHE_MAX_BYTES"},
		{"negative reload rate", "", map[string]string{"WXLOOKUP_RELOAD_RATE": "-5"}, "WXLOOKUP_RELOAD_RATE"},
		{"bad bool", "", map[string]string{"WXLOOKUP_REQUIRE_ENCRYPTION": "maybe"}, "WXLOOKUP_REQUIRE_ENCRYPTION"},
		{"short aes key", "", map[string]string{"WXLOOKUP_AES_KEY": secret}, "WXLOOKUP_AES_KEY"},
		{"both sources", "", map[string]string{"WXLOOKUP_MYSQL_DSN": "u@tcp(h)/d", "WXLOOKUP_CSV": "x.csv", "WXLOOKUP_TOKEN": "t"}, "WXLOOKUP_CSV"},
		{"injection in table", "", map[string]string{"WXLOOKUP_TABLE": "t; DROP TABLE x"}, "WXLOOKUP_TABLE"},
		{"reconcile shorter than refresh", "", map[string]string{"WXLOOKUP_RECONCILE_INTERVAL": "100ms"}, "WXLOOKUP_RECONCILE_INTERVAL"},
		{"unknown file key", "tokn: x\n", nil, `unknown setting "tokn"`},
		{"bad file duration", "refresh_interval: fast\n", nil, "refresh_interval"},
		{"allow table without mysql", "", map[string]string{"WXLOOKUP_ALLOW_TABLE": "wx_allow"}, "WXLOOKUP_ALLOW_TABLE"},
		{"bad log format", "", map[string]string{"WXLOOKUP_LOG_FORMAT": "xml"}, "WXLOOKUP_LOG_FORMAT"},
		{"skew of zero", "", map[string]string{"WXLOOKUP_TIMESTAMP_SKEW": "0"}, "WXLOOKUP_TIMESTAMP_SKEW"},
		{"skew of 0s", "", map[string]string{"WXLOOKUP_TIMESTAMP_SKEW": "0s"}, "WXLOOKUP_TIMESTAMP_SKEW"},
		{"skew over an hour", "", map[string]string{"WXLOOKUP_TIMESTAMP_SKEW": "61m"}, "WXLOOKUP_TIMESTAMP_SKEW"},
		{"skew of zero in the file", "timestamp_skew: 0\n", nil, "WXLOOKUP_TIMESTAMP_SKEW"},
		{"encryption required without a key", "", map[string]string{"WXLOOKUP_REQUIRE_ENCRYPTION": "true"}, "WXLOOKUP_REQUIRE_ENCRYPTION"},
		{"unknown change feed", "", map[string]string{"WXLOOKUP_CHANGE_FEED": "cdc"}, "WXLOOKUP_CHANGE_FEED"},
		{"binlog without mysql", "", map[string]string{"WXLOOKUP_CHANGE_FEED": "binlog"}, "WXLOOKUP_MYSQL_DSN"},
		{"binlog settings when polling", "", map[string]string{"WXLOOKUP_MYSQL_DSN": "u@tcp(h)/d", "WXLOOKUP_TOKEN": "t",
			"WXLOOKUP_BINLOG_SERVER_ID": "7"}, "WXLOOKUP_CHANGE_FEED=binlog"},
		{"server id zero", "", map[string]string{"WXLOOKUP_BINLOG_SERVER_ID": "0"}, "WXLOOKUP_BINLOG_SERVER_ID"},
		{"server id too large", "", map[string]string{"WXLOOKUP_BINLOG_SERVER_ID": "4294967296"}, "WXLOOKUP_BINLOG_SERVER_ID"},
		{"binlog dsn unparseable", "", map[string]string{"WXLOOKUP_MYSQL_DSN": "u@tcp(h)/d", "WXLOOKUP_TOKEN": "t",
			"WXLOOKUP_CHANGE_FEED": "binlog", "WXLOOKUP_BINLOG_DSN": "repl:" + secret + "@db:3306/plant"}, "WXLOOKUP_BINLOG_DSN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, "c.yaml", tt.file)
			}
			_, err := LoadConfig(path, envOf(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows a secret: %q", err)
			}
		})
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../../examples/config.yaml", envOf(map[string]string{"WXLOOKUP_TOKEN": "t"}))
	if err != nil {
		t.Fatalf("examples/config.yaml: %v", err)
	}
	if c.Listen == "" {
		t.Fatalf("empty listen")
	}
}

// FuzzConfigFile feeds the YAML configuration loader arbitrary files: it never panics, and
// a refusal is one line that never echoes the value of a secret setting.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		"listen: \":8080\"\ntoken: t\n",
		"value_columns: [location, shelf]\ntemplates:\n  found: \"{{.Key}}\"\n",
		"token: [a, b]\n",
		"aes_key: SECRETVALUE\n",
		"mysql_dsn: {a: 1}\n",
		"refresh_interval: -1s\n",
		"cache_max_bytes: 12 zettabytes\n",
		"templates: 3\n",
		"- a\n- b\n",
		"&a [*a]",
		"queries:\n  - name: stock\n    prefix: '#'\n    csv: s.csv\n    key_column: sku\n    value_columns: qty, bin\n",
		"queries:\n  - name: a\n    prefix: {x: 1}\n",
		"queries:\n  - [1]\n",
		"queries: {a: 1}\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		c := DefaultConfig()
		err := c.applyFile("fuzz.yaml", []byte(data))
		if err == nil {
			return
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Fatalf("multi-line error %q", msg)
		}
		for _, s := range settings {
			if !s.secret {
				continue
			}
			// A secret that fails to parse (all of them are plain strings, so only a
			// non-scalar can) must not be echoed.
			var v string
			if _, err := fmt.Sscanf(data, s.key+": %s", &v); err == nil && len(v) >= 8 && strings.Contains(msg, v) {
				t.Fatalf("error %q shows the value of %s", msg, s.key)
			}
		}
	})
}

// TestLoadConfigTrustDefaults: WXLOOKUP_REQUIRE_ENCRYPTION defaults to true when an AES
// key is set and false otherwise, and only an explicit false lets plaintext in beside a
// key; WXLOOKUP_TIMESTAMP_SKEW takes any value in (0, 1h].
func TestLoadConfigTrustDefaults(t *testing.T) {
	const key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	tests := []struct {
		name    string
		env     map[string]string
		require bool
		skew    time.Duration
	}{
		{"no key", nil, false, 5 * time.Minute},
		{"a key", map[string]string{"WXLOOKUP_AES_KEY": key}, true, 5 * time.Minute},
		{"a key, explicitly not required", map[string]string{"WXLOOKUP_AES_KEY": key, "WXLOOKUP_REQUIRE_ENCRYPTION": "false"}, false, 5 * time.Minute},
		{"a key, explicitly required", map[string]string{"WXLOOKUP_AES_KEY": key, "WXLOOKUP_REQUIRE_ENCRYPTION": "true"}, true, 5 * time.Minute},
		{"no key, explicitly not required", map[string]string{"WXLOOKUP_REQUIRE_ENCRYPTION": "false"}, false, 5 * time.Minute},
		{"skew of a second", map[string]string{"WXLOOKUP_TIMESTAMP_SKEW": "1s"}, false, time.Second},
		{"skew of an hour", map[string]string{"WXLOOKUP_TIMESTAMP_SKEW": "1h"}, false, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadConfig("", envOf(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.RequireEncryption != tt.require {
				t.Errorf("RequireEncryption: got %v, want %v", c.RequireEncryption, tt.require)
			}
			if c.TimestampSkew != tt.skew {
				t.Errorf("TimestampSkew: got %s, want %s", c.TimestampSkew, tt.skew)
			}
		})
	}
	// The file can say it too.
	path := writeFile(t, "c.yaml", "aes_key: "+key+"\nrequire_encryption: false\n")
	if c, err := LoadConfig(path, envOf(nil)); err != nil || c.RequireEncryption {
		t.Errorf("require_encryption: false in the file: got %v %v, want false", c.RequireEncryption, err)
	}
}

// TestReloadRateSetting: WXLOOKUP_RELOAD_RATE reaches the cache as its rows a second, and
// 0 as no limit (the cache's own zero would mean its default).
func TestReloadRateSetting(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want int
	}{{"", cache.DefaultReloadRate}, {"1000", 1000}, {"0", -1}} {
		c, err := LoadConfig("", envOf(map[string]string{"WXLOOKUP_RELOAD_RATE": tc.env}))
		if err != nil {
			t.Fatal(err)
		}
		if got := reloadRate(c.ReloadRate); got != tc.want {
			t.Errorf("WXLOOKUP_RELOAD_RATE=%q: the cache gets %d, want %d", tc.env, got, tc.want)
		}
	}
}
