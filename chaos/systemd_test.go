package chaos

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// deployUnit is the systemd unit the deployment ships.
const deployUnit = "../deploy/wxlookup.service"

// unitFile is a parsed systemd unit: section → key → values, in file order.
type unitFile map[string]map[string][]string

func parseUnit(text string) unitFile {
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			if k, v, ok := strings.Cut(line, "="); ok && section != "" {
				u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
			}
		}
	}
	return u
}

// get returns the last value of key in section ("" when unset), as systemd reads it.
func (u unitFile) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// commands splits shell lines into commands at "&&" and ";", dropping comments.
func commands(lines []string) []string {
	var out []string
	for _, l := range lines {
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		for _, part := range strings.FieldsFunc(l, func(r rune) bool { return r == ';' }) {
			for _, c := range strings.Split(part, "&&") {
				if c = strings.Join(strings.Fields(c), " "); c != "" && !strings.HasPrefix(c, "#") {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// unitInstallSteps returns the commands of the unit's install comment: the indented
// comment lines that follow the line saying "Install".
func unitInstallSteps(text string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "#") {
			break // the comment header ends
		}
		switch {
		case strings.Contains(l, "Install"):
			in = true
		case in && strings.HasPrefix(l, "#   "):
			lines = append(lines, strings.TrimPrefix(l, "#   "))
		case in && len(lines) > 0:
			in = false
		}
	}
	return commands(lines)
}

// docInstallSteps returns the commands of the first ```sh block of docs/OPERATIONS.md's
// "### systemd" section.
func docInstallSteps(t *testing.T, doc string) []string {
	t.Helper()
	_, sec, ok := strings.Cut(doc, "\n### systemd\n")
	if !ok {
		t.Fatal("docs/OPERATIONS.md has no '### systemd' section")
	}
	if i := strings.Index(sec, "\n### "); i >= 0 {
		sec = sec[:i]
	}
	_, block, ok := strings.Cut(sec, "```sh\n")
	if !ok {
		t.Fatal("docs/OPERATIONS.md, systemd: no ```sh block of install steps")
	}
	block, _, _ = strings.Cut(block, "```")
	return commands(strings.Split(block, "\n"))
}

// node is a file or directory as the install steps leave it.
type node struct {
	mode         os.FileMode
	owner, group string
	dir          bool
	src          string // what was installed there ("" for a directory)
}

// machine is what the install steps make: users (name → groups) and files.
type machine struct {
	users map[string][]string
	files map[string]node
}

// apply interprets the install steps (useradd, install; others are ignored) on a machine
// with Debian's defaults: system directories 0755 root:root, only root and its group.
func apply(t *testing.T, steps []string) machine {
	t.Helper()
	m := machine{users: map[string][]string{"root": {"root"}}, files: map[string]node{}}
	for _, c := range steps {
		f := strings.Fields(c)
		switch f[0] {
		case "useradd", "adduser":
			var name string
			var groups []string
			userGroup := f[0] == "adduser" && slices.Contains(f, "--group")
			for i := 1; i < len(f); i++ {
				switch a := f[i]; {
				case a == "--user-group" || a == "-U":
					userGroup = true
				case a == "-g" || a == "--gid" || a == "-G" || a == "--groups" || a == "--home-dir" || a == "-d" || a == "--shell" || a == "-s" || a == "--ingroup":
					if a == "-g" || a == "--gid" || a == "--ingroup" || a == "-G" || a == "--groups" {
						groups = append(groups, strings.Split(f[i+1], ",")...)
					}
					i++
				case !strings.HasPrefix(a, "-"):
					name = a
				}
			}
			if userGroup {
				groups = append([]string{name}, groups...)
			}
			m.users[name] = groups
		case "install":
			n := node{mode: 0o755, owner: "root", group: "root"}
			var args []string
			for i := 1; i < len(f); i++ {
				switch f[i] {
				case "-d":
					n.dir = true
				case "-D":
				case "-m":
					v, err := strconv.ParseUint(f[i+1], 8, 32)
					if err != nil {
						t.Fatalf("%q: mode %q", c, f[i+1])
					}
					n.mode = os.FileMode(v)
					i++
				case "-o":
					n.owner = f[i+1]
					i++
				case "-g":
					n.group = f[i+1]
					i++
				default:
					args = append(args, f[i])
				}
			}
			if n.dir {
				for _, d := range args {
					m.files[path.Clean(d)] = n
				}
				continue
			}
			if len(args) < 2 {
				t.Fatalf("%q: want install SRC DST", c)
			}
			dst := args[len(args)-1]
			for _, src := range args[:len(args)-1] {
				d := dst
				if strings.HasSuffix(dst, "/") {
					d = dst + path.Base(src)
				}
				n.src = src
				m.files[path.Clean(d)] = n
			}
		}
	}
	return m
}

// stat returns the node at p: what the steps installed, else a system default.
func (m machine) stat(p string) (node, bool) {
	if n, ok := m.files[p]; ok {
		return n, true
	}
	switch p {
	case "/", "/etc", "/usr", "/usr/local", "/usr/local/bin", "/etc/systemd", "/etc/systemd/system":
		return node{mode: 0o755, owner: "root", group: "root", dir: true}, true
	}
	return node{}, false
}

// can reports whether user (with groups) may open p for perm (4 read, 2 write, 1
// execute): search permission on every directory above it, then perm on p itself.
func (m machine) can(user string, groups []string, p string, perm os.FileMode) bool {
	bits := func(n node) os.FileMode {
		switch {
		case n.owner == user:
			return n.mode >> 6 & 7
		case slices.Contains(groups, n.group):
			return n.mode >> 3 & 7
		}
		return n.mode & 7
	}
	for d := path.Dir(p); ; d = path.Dir(d) {
		n, ok := m.stat(d)
		if !ok || bits(n)&1 == 0 {
			return false
		}
		if d == "/" {
			break
		}
	}
	n, ok := m.stat(p)
	return ok && bits(n)&perm == perm
}

// TestDeploySystemdUnit: deploy/wxlookup.service, installed as its comment (and
// docs/OPERATIONS.md, word for word) says, starts: it runs as a fixed system user that
// may execute the binary and read the config file through its group, cannot write the
// config, and cannot read the secrets file that systemd reads for it; the unit passes
// `systemd-analyze verify` (make testdeps installs systemd for it).
func TestDeploySystemdUnit(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(deployUnit)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	u := parseUnit(text)
	steps := unitInstallSteps(text)
	if len(steps) == 0 {
		t.Fatalf("%s has no install steps in its comment", deployUnit)
	}
	ops, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	if doc := docInstallSteps(t, string(ops)); !slices.Equal(doc, steps) {
		t.Errorf("docs/OPERATIONS.md's install steps differ from the unit's:\ndocs: %q\nunit: %q", doc, steps)
	}
	m := apply(t, steps)

	if u.get("Service", "DynamicUser") == "yes" {
		t.Errorf("DynamicUser=yes: a dynamic user is in no group the install steps can give the config to")
	}
	user, group := u.get("Service", "User"), u.get("Service", "Group")
	if user == "" || user == "root" {
		t.Fatalf("User=%q, want a fixed system user", user)
	}
	groups, ok := m.users[user]
	if !ok {
		t.Fatalf("User=%s: the install steps create no such user (steps: %q)", user, steps)
	}
	if group != "" {
		groups = append([]string{group}, groups...)
	}
	for _, g := range strings.Fields(u.get("Service", "SupplementaryGroups")) {
		groups = append(groups, g)
	}

	execStart := strings.Fields(u.get("Service", "ExecStart"))
	if len(execStart) == 0 {
		t.Fatal("no ExecStart")
	}
	if !m.can(user, groups, execStart[0], 1) {
		t.Errorf("%s cannot execute %s", user, execStart[0])
	}
	config := ""
	for i, a := range execStart {
		if a == "--config" && i+1 < len(execStart) {
			config = execStart[i+1]
		}
	}
	if config == "" {
		t.Fatal("ExecStart has no --config FILE")
	}
	if !m.can(user, groups, config, 4) {
		t.Errorf("%s cannot read %s (%+v, directory %+v): the service would not start", user, config, m.files[config], m.files[path.Dir(config)])
	}
	if m.can(user, groups, config, 2) {
		t.Errorf("%s may write its own config %s", user, config)
	}
	if n := m.files[config]; n.mode&0o007 != 0 {
		t.Errorf("%s is %o: others may read it", config, n.mode)
	}
	env := strings.TrimPrefix(u.get("Service", "EnvironmentFile"), "-")
	if n, ok := m.files[env]; !ok || n.owner != "root" || n.mode != 0o600 {
		t.Errorf("EnvironmentFile %s: the steps leave it %+v (installed: %v), want 0600 root: systemd reads it as root", env, n, ok)
	}
	if m.can(user, groups, env, 4) {
		t.Errorf("%s can read the secrets file %s: only systemd (root) should", user, env)
	}
	installed := false
	for p, n := range m.files {
		if strings.HasPrefix(p, "/etc/systemd/system/") && filepath.Base(n.src) == filepath.Base(deployUnit) {
			installed = true
		}
	}
	if !installed {
		t.Errorf("the install steps do not put %s into /etc/systemd/system/", filepath.Base(deployUnit))
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("no systemd-analyze: make testdeps installs Debian's systemd package for it")
	}
	// verify checks that ExecStart's binary exists: point it at the one the tests built.
	dir := t.TempDir()
	unit := filepath.Join(dir, filepath.Base(deployUnit))
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(text, execStart[0]+" ", binary(t)+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", deployUnit, err, out)
	}
}
