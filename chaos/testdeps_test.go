package chaos

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAptMachine is a directory of stand-ins for apt-get, systemctl and update-rc.d that
// log what they are asked, for running the Makefile's install step without installing.
// apt-get install enables every package named (as Debian's maintainer scripts do) and
// records what the policy-rc.d in force answers to starting it; systemctl and update-rc.d
// disable.
type fakeAptMachine struct {
	dir, bin, log, policy, systemdRun string
}

func newFakeAptMachine(t *testing.T) *fakeAptMachine {
	t.Helper()
	m := &fakeAptMachine{dir: t.TempDir()}
	m.bin, m.log = filepath.Join(m.dir, "bin"), filepath.Join(m.dir, "log")
	m.policy, m.systemdRun = filepath.Join(m.dir, "policy-rc.d"), filepath.Join(m.dir, "run-systemd")
	if err := os.MkdirAll(filepath.Join(m.dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		"apt-get": `echo "apt-get $*" >> "$FAKE/log"
[ "$1" = install ] || exit 0
for p in "$@"; do
	case "$p" in -*|install) continue ;; esac
	if [ -x "$FAKE/policy-rc.d" ]; then "$FAKE/policy-rc.d" "$p" start; echo "policy-rc.d $p start: $?" >> "$FAKE/log"
	else echo "policy-rc.d $p start: none" >> "$FAKE/log"; fi
	echo enabled > "$FAKE/state/$p"
done
[ -z "$FAKE_APT_FAIL" ] || exit 100`,
		"systemctl": `echo "systemctl $*" >> "$FAKE/log"
for u in "$@"; do :; done
[ "$1" = disable ] && echo disabled > "$FAKE/state/$u"
exit 0`,
		"update-rc.d": `echo "update-rc.d $*" >> "$FAKE/log"
echo disabled > "$FAKE/state/$1"`,
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(m.bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// make runs a Makefile target with the stand-ins first on PATH.
func (m *fakeAptMachine) make(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-s", "--no-print-directory", "-f", "../Makefile",
		"POLICY_RC_D=" + m.policy, "SYSTEMD_RUN=" + m.systemdRun}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+m.bin+":"+os.Getenv("PATH"), "FAKE="+m.dir)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (m *fakeAptMachine) state(t *testing.T, pkg string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.dir, "state", pkg))
	if err != nil {
		return "absent"
	}
	return strings.TrimSpace(string(b))
}

func (m *fakeAptMachine) logged(t *testing.T) string {
	t.Helper()
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// TestTestdepsLeaveNoServiceRunning: the Makefile's apt-install step, which make testdeps
// uses for mariadb-server and nginx, installs with a policy-rc.d that refuses to start
// services (removed afterwards; a machine's own is kept), and disables the daemons it
// installed — with --now where systemd runs — so `make test` leaves nginx neither enabled
// nor on :80.
func TestTestdepsLeaveNoServiceRunning(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("no make: the tests run from `make test`")
	}
	tests := []struct {
		name          string
		systemd       bool   // systemd runs (its run directory exists)
		ownPolicy     string // a policy-rc.d the machine had before ("" none)
		aptFails      bool
		wantPolicy    string // what the policy answered to starting nginx during the install
		wantDisable   string
		wantEnabled   string // nginx afterwards
		wantPolicyEnd string // the policy file afterwards ("" gone)
	}{
		{name: "no systemd", wantPolicy: "101", wantDisable: "systemctl disable nginx", wantEnabled: "disabled"},
		{name: "systemd running", systemd: true, wantPolicy: "101", wantDisable: "systemctl disable --now nginx", wantEnabled: "disabled"},
		{name: "the machine's own policy", ownPolicy: "#!/bin/sh\nexit 0\n", wantPolicy: "0",
			wantDisable: "systemctl disable nginx", wantEnabled: "disabled", wantPolicyEnd: "#!/bin/sh\nexit 0\n"},
		{name: "apt-get fails", aptFails: true, wantPolicy: "101", wantEnabled: "enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeAptMachine(t)
			if tt.systemd {
				if err := os.Mkdir(m.systemdRun, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tt.ownPolicy != "" {
				if err := os.WriteFile(m.policy, []byte(tt.ownPolicy), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var env []string
			if tt.aptFails {
				env = append(env, "FAKE_APT_FAIL=1")
			}
			out, err := m.make(t, env, "apt-install", "PKGS=nginx", "DAEMONS=nginx")
			if (err != nil) != tt.aptFails {
				t.Fatalf("make apt-install: %v, want failure %v\n%s", err, tt.aptFails, out)
			}
			log := m.logged(t)
			if want := "policy-rc.d nginx start: " + tt.wantPolicy; !strings.Contains(log, want) {
				t.Errorf("during the install: got\n%s\nwant %q", log, want)
			}
			if tt.wantDisable != "" && !strings.Contains(log, tt.wantDisable+"\n") {
				t.Errorf("after the install: got\n%s\nwant %q", log, tt.wantDisable)
			}
			if got := m.state(t, "nginx"); got != tt.wantEnabled {
				t.Errorf("nginx is %s after make apt-install, want %s", got, tt.wantEnabled)
			}
			policy, err := os.ReadFile(m.policy)
			if got := string(policy); (err == nil) != (tt.wantPolicyEnd != "") || got != tt.wantPolicyEnd {
				t.Errorf("policy-rc.d afterwards: %q (%v), want %q", got, err, tt.wantPolicyEnd)
			}
		})
	}
}

// TestServicesCheck: make test's closing check fails when a service became enabled or a
// port began listening during the run, and passes when either was so before.
func TestServicesCheck(t *testing.T) {
	t.Parallel()
	before := "enabled nginx disabled\nenabled mariadb enabled\nlistening 80 no\nlistening 3306 yes\n"
	tests := []struct {
		name, after string
		fail        string // "" when it must pass
	}{
		{"unchanged", before, ""},
		{"nginx enabled", strings.Replace(before, "nginx disabled", "nginx enabled", 1), "enabled nginx is enabled"},
		{"something on :80", strings.Replace(before, "80 no", "80 yes", 1), "listening 80 is yes"},
		{"mariadb was enabled before", before, ""},
		{"fewer", "enabled nginx disabled\nenabled mariadb disabled\nlistening 80 no\nlistening 3306 no\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeAptMachine(t)
			b, a := filepath.Join(m.dir, "before"), filepath.Join(m.dir, "after")
			os.WriteFile(b, []byte(before), 0o644)
			os.WriteFile(a, []byte(tt.after), 0o644)
			out, err := m.make(t, nil, "services-check", "SERVICES_BEFORE="+b, "SERVICES_AFTER="+a)
			switch {
			case tt.fail == "" && err != nil:
				t.Errorf("got %v:\n%s\nwant it to pass", err, out)
			case tt.fail != "" && (err == nil || !strings.Contains(out, tt.fail)):
				t.Errorf("got %v:\n%s\nwant a failure saying %q", err, out, tt.fail)
			}
		})
	}
}
