package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestMySQLDSNUnparseable: a DSN the driver cannot parse stops start-up with one line
// naming WXLOOKUP_MYSQL_DSN and showing the right form, never the password.
func TestMySQLDSNUnparseable(t *testing.T) {
	const password = "Pw0rd-s3cr3t"
	tests := []struct {
		name, dsn string
		ok        bool
		hint      string // what the line must say beyond the setting and the form
	}{
		{"valid", "ro:" + password + "@tcp(db.plant.local:3306)/plant?readTimeout=5s", true, ""},
		{"valid unix socket", "ro:" + password + "@unix(/run/mysqld/mysqld.sock)/plant", true, ""},
		{"url form", "mysql://ro:" + password + "@db:3306/plant", false, "tcp(host:port)"},
		{"no tcp()", "ro:" + password + "@db.plant.local:3306/plant", false, "tcp(host:port)"},
		{"no database", "ro:" + password + "@tcp(db:3306)", false, "missing the slash"},
		{"unclosed address", "ro:" + password + "@tcp(db:3306/plant", false, ""},
		{"bad parameter", "ro:" + password + "@tcp(db:3306)/plant?parseTime=yes", false, "yes"},
		{"bad duration", "ro:" + password + "@tcp(db:3306)/plant?readTimeout=5", false, "readTimeout"},
		{"slash in the password", "ro:Pw0/rd-s3cr3t@tcp(db:3306)", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig("", envOf(map[string]string{"WXLOOKUP_MYSQL_DSN": tt.dsn, "WXLOOKUP_TOKEN": "t"}))
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v, want %q accepted", err, tt.dsn)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error for %q, want a refusal", tt.dsn)
			}
			msg := err.Error()
			for _, want := range []string{"WXLOOKUP_MYSQL_DSN", "user:password@tcp(host:3306)/database", tt.hint} {
				if !strings.Contains(msg, want) {
					t.Errorf("got %q, want it to say %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("got %q, want one line", msg)
			}
			for i := 0; i+3 <= len(password); i++ {
				if piece := password[i : i+3]; strings.Contains(msg, piece) {
					t.Errorf("got %q: it shows %q, a piece of the password", msg, piece)
					break
				}
			}
		})
	}
}

// TestUnknownEnvironmentNames: a WXLOOKUP_* name that is no setting gets a warning naming
// it and the closest setting; known names and other variables get none.
func TestUnknownEnvironmentNames(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string // one warning per entry: the unknown name and the suggestion
	}{
		{"known names", []string{"WXLOOKUP_TOKEN=x", "WXLOOKUP_REFRESH_INTERVAL=2s", "WXLOOKUP_CONFIG=/etc/w.yaml", "PATH=/bin"}, nil},
		{"typo", []string{"WXLOOKUP_REFRESH_INTERVALL=2s"}, []string{"WXLOOKUP_REFRESH_INTERVALL|WXLOOKUP_REFRESH_INTERVAL"}},
		{"transposition", []string{"WXLOOKUP_TOEKN=x"}, []string{"WXLOOKUP_TOEKN|WXLOOKUP_TOKEN"}},
		{"american spelling", []string{"WXLOOKUP_TEMPLATE_UNAUTHORIZED=no"}, []string{"WXLOOKUP_TEMPLATE_UNAUTHORIZED|WXLOOKUP_TEMPLATE_UNAUTHORISED"}},
		{"lower case", []string{"WXLOOKUP_mysql_dsn=u@tcp(h)/d"}, []string{"WXLOOKUP_mysql_dsn|WXLOOKUP_MYSQL_DSN"}},
		{"two", []string{"WXLOOKUP_ADMIN_LISTENER=:9", "WXLOOKUP_CACHE_MAX=1GiB"},
			[]string{"WXLOOKUP_ADMIN_LISTENER|WXLOOKUP_ADMIN_LISTEN", "WXLOOKUP_CACHE_MAX|WXLOOKUP_CACHE_MAX_BYTES"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := unknownEnv(tt.environ)
			if len(got) != len(tt.want) {
				t.Fatalf("got %q, want %d warnings", got, len(tt.want))
			}
			for i, w := range tt.want {
				name, suggestion, _ := strings.Cut(w, "|")
				if !strings.Contains(got[i], name+" ") || !strings.HasSuffix(got[i], suggestion+"?") {
					t.Errorf("got %q, want it to name %s and suggest %s", got[i], name, suggestion)
				}
			}
		})
	}
}

// TestServeWarnsOfUnknownEnvironment: `wxlookup serve` logs the warning at start.
func TestServeWarnsOfUnknownEnvironment(t *testing.T) {
	t.Setenv("WXLOOKUP_REFRESH_INTERVALL", "2s")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stop at once: only the start-up log matters
	var stdout, stderr bytes.Buffer
	run(ctx, []string{"serve"}, &stdout, &stderr, envOf(map[string]string{"WXLOOKUP_LISTEN": "127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN": "127.0.0.1:0"}))
	if got := stderr.String(); !strings.Contains(got, "WXLOOKUP_REFRESH_INTERVALL is not a setting; did you mean WXLOOKUP_REFRESH_INTERVAL?") {
		t.Errorf("serve's log lacks the warning:\n%s", got)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "abc", 0}, {"abc", "", 3}, {"abc", "abd", 1}, {"abc", "acb", 1},
		{"token", "toekn", 1}, {"interval", "intervall", 1}, {"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
