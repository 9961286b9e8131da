package chaos

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// deployNginx is the nginx site the deployment ships.
const deployNginx = "../deploy/nginx.conf"

// nginxBinary returns the path of nginx, failing the test when it is missing: these tests
// must run, and `make test` installs nginx.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Fatal("no nginx found: make testdeps installs Debian's nginx (stopped and disabled: the tests run their own)")
	return ""
}

// TestDeployNginxConfValid: deploy/nginx.conf, as shipped, passes `nginx -t` with the
// nginx Debian installs (certificate paths pointed at a throw-away self-signed pair).
func TestDeployNginxConfValid(t *testing.T) {
	t.Parallel()
	bin := nginxBinary(t)
	dir := t.TempDir()
	raw, err := os.ReadFile(deployNginx)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t, dir)
	site := strings.NewReplacer("/etc/letsencrypt/live/wx.plant.example.com/fullchain.pem", cert,
		"/etc/letsencrypt/live/wx.plant.example.com/privkey.pem", key).Replace(string(raw))
	if site == string(raw) {
		t.Fatalf("%s names no certificate the test knows to replace", deployNginx)
	}
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf("pid %[1]s/nginx.pid;\nerror_log %[1]s/error.log;\nevents {}\nhttp {\n    access_log off;\n    include %[1]s/site.conf;\n}\n", dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t on %s: %v\n%s", deployNginx, err, out)
	}
}

// selfSigned writes a self-signed certificate and key for wx.plant.example.com.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wx.plant.example.com"},
		DNSNames: []string{"wx.plant.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certPath, keyPath
}

// promtoolBinary returns promtool from PATH, $PROMTOOL or .tools (make testdeps unpacks
// it there), failing the test when there is none.
func promtoolBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	for _, p := range []string{os.Getenv("PROMTOOL"), "../.tools/prometheus/usr/bin/promtool"} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatal("no promtool found: make testdeps unpacks Debian's prometheus package into .tools")
	return ""
}

var metricName = regexp.MustCompile(`\bwxlookup_[a-z0-9_]+`)

// TestAlertRules: deploy/alerts.yml passes promtool check rules and its unit tests
// (deploy/alerts_test.yml); every metric it and deploy/grafana.json name is one the
// service exports (scraped from a running one); every alert has a summary, a description
// and a section of docs/OPERATIONS.md that its description links to.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := promtoolBinary(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	svc := startService(t, "wxlookup", map[string]string{})
	svc.waitReady(30 * time.Second)
	// Labelled counters that appear in /metrics only once their first label value is used.
	exported := map[string]bool{"wxlookup_loader_step_errors_total": true, "wxlookup_cache_read_through_total": true}
	for series := range svc.metrics() {
		exported[strings.SplitN(series, "{", 2)[0]] = true
	}

	raw, err := os.ReadFile("../deploy/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string
				Expr        string
				Annotations map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	ops, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			exprs = append(exprs, r.Alert+": "+r.Expr)
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: no summary or description", r.Alert)
			}
			anchor := "docs/OPERATIONS.md#" + strings.ToLower(r.Alert)
			if !strings.Contains(r.Annotations["description"], anchor) {
				t.Errorf("%s: the description does not link %s", r.Alert, anchor)
			}
			if !strings.Contains(string(ops), "\n### "+r.Alert+"\n") {
				t.Errorf("%s: docs/OPERATIONS.md has no section '### %s'", r.Alert, r.Alert)
			}
		}
	}
	if alerts < 6 {
		t.Errorf("%d alerts, want at least staleness, loader errors, incomplete cache, rejections, latency and down", alerts)
	}

	raw, err = os.ReadFile("../deploy/grafana.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, "grafana "+p.Title+": "+tg.Expr)
		}
	}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			if !exported[m] {
				t.Errorf("%s: %s is not a metric the service exports", e, m)
			}
		}
	}
	// Every SPEC section 7 metric is on the dashboard.
	for _, m := range []string{"wxlookup_requests_total", "wxlookup_request_duration_seconds_bucket", "wxlookup_cache_hits_total",
		"wxlookup_cache_misses_total", "wxlookup_cache_entries", "wxlookup_cache_cost_bytes", "wxlookup_cache_complete",
		"wxlookup_cache_sets_dropped_total", "wxlookup_cache_evictions_total", "wxlookup_loader_last_success_timestamp_seconds",
		"wxlookup_loader_staleness_seconds", "wxlookup_loader_rows_loaded_total", "wxlookup_loader_errors_total",
		"wxlookup_duplicates_total", "wxlookup_rejected_total", "wxlookup_lookups_total"} {
		if !strings.Contains(string(raw), m) {
			t.Errorf("grafana.json does not chart %s", m)
		}
	}
}
