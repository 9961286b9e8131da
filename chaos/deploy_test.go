package chaos

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	t.Fatal("no nginx found: install it (make testdeps does: apt-get install nginx-light)")
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
	site := strings.NewReplacer("/etc/ssl/wxlookup/fullchain.pem", cert, "/etc/ssl/wxlookup/privkey.pem", key).Replace(string(raw))
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
