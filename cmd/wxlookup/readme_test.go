package main

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const repoRoot = "../.."

// generated are paths the docs may name that are made by the build, not kept in the
// repository.
var generated = map[string]string{
	"bin/wxlookup": "make build",
	"chaos.out":    "make chaos",
	".tools":       "make testdeps",
}

// docPaths returns what doc names that looks like a file of the repository: `code` spans
// (relative to the repository root, as the docs write them) and link targets (relative to
// dir, the doc's directory), that start with a top-level entry of the repository or end in
// a file extension.
func docPaths(t *testing.T, doc, dir string) []string {
	t.Helper()
	top := map[string]bool{}
	ents, err := os.ReadDir(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		top[e.Name()] = true
	}
	ext := regexp.MustCompile(`\.(md|go|ya?ml|json|csv|sql|conf|service|png|sh|txt)$`)
	shape := regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.@-]+)*/?$`)
	var out []string
	add := func(c, base string) {
		c = strings.TrimPrefix(c, "./")
		if !shape.MatchString(c) {
			return
		}
		first, _, _ := strings.Cut(path.Join(base, c), "/")
		if top[first] || ext.MatchString(c) {
			out = append(out, path.Clean(path.Join(base, c)))
		}
	}
	for _, m := range regexp.MustCompile("`([^`\n]+)`").FindAllStringSubmatch(doc, -1) {
		add(m[1], "")
	}
	for _, m := range regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`).FindAllStringSubmatch(doc, -1) {
		if !strings.Contains(m[1], "://") {
			add(m[1], dir)
		}
	}
	return out
}

// testFunc matches a test, benchmark or fuzz target named as a path: chaos/TestX.
var testFunc = regexp.MustCompile(`^(Test|Benchmark|Fuzz)[A-Z0-9]`)

// exists reports whether p is in the repository: a file or directory, or a test function
// of the package in p's directory (chaos/TestNoSecretLeaks).
func exists(t *testing.T, p string) bool {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot, p)); err == nil {
		return true
	}
	name := path.Base(p)
	if !testFunc.MatchString(name) {
		return false
	}
	files, _ := filepath.Glob(filepath.Join(repoRoot, path.Dir(p), "*_test.go"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && regexp.MustCompile(`(?m)^func `+name+`\(`).Match(b) {
			return true
		}
	}
	return false
}

// TestDocsNameOnlyRepoFiles: every file README.md and docs/OPERATIONS.md name exists in the
// repository (or is one the build makes).
func TestDocsNameOnlyRepoFiles(t *testing.T) {
	for _, doc := range []string{"README.md", "docs/OPERATIONS.md"} {
		t.Run(doc, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(repoRoot, doc))
			if err != nil {
				t.Fatal(err)
			}
			paths := docPaths(t, string(raw), path.Dir(doc))
			if len(paths) < 5 {
				t.Fatalf("found only %q: the path scan is broken", paths)
			}
			for _, p := range paths {
				if _, ok := generated[p]; ok {
					continue
				}
				if !exists(t, p) {
					t.Errorf("%s names %s, which is not in the repository", doc, p)
				}
			}
		})
	}
}

// TestReadmeSetUp: the README's set-up section has exactly the two commands (make run and
// make test), says which Go it needs (go.mod's), and names every package make test
// installs (the Makefile's apt-install lines and promtool) and that no service is left
// enabled or listening.
func TestReadmeSetUp(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, setup, ok := strings.Cut(string(raw), "\n## Set up\n")
	if !ok {
		t.Fatal("README.md has no '## Set up' section")
	}
	setup, _, _ = strings.Cut(setup, "\n## ")
	_, block, ok := strings.Cut(setup, "```sh\n")
	if !ok {
		t.Fatal("README.md, Set up: no ```sh block")
	}
	block, _, _ = strings.Cut(block, "```")
	var cmds []string
	for _, l := range strings.Split(block, "\n") {
		if c, _, _ := strings.Cut(l, "#"); strings.TrimSpace(c) != "" {
			cmds = append(cmds, strings.TrimSpace(c))
		}
	}
	if !slices.Equal(cmds, []string{"make run", "make test"}) {
		t.Errorf("set-up commands %q, want exactly make run and make test", cmds)
	}

	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(gomod))
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	if !strings.Contains(setup, "Go "+goVersion[1]) {
		t.Errorf("README.md, Set up: does not say Go %s is required (go.mod)", goVersion[1])
	}

	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []string
	for _, m := range regexp.MustCompile(`apt-install PKGS=("[^"]*"|[A-Za-z0-9.+-]+)`).FindAllStringSubmatch(string(mk), -1) {
		for _, p := range strings.Fields(strings.Trim(m[1], `"`)) {
			if !strings.HasPrefix(p, "-") {
				pkgs = append(pkgs, p)
			}
		}
	}
	if strings.Contains(string(mk), "apt-get download prometheus") {
		pkgs = append(pkgs, "promtool")
	}
	if len(pkgs) < 5 {
		t.Fatalf("found only %q in the Makefile: the scan is broken", pkgs)
	}
	for _, p := range pkgs {
		if p == "libc6-dev" {
			continue // comes with gcc
		}
		if !strings.Contains(setup, "`"+p+"`") && !strings.Contains(setup, p+",") && !strings.Contains(setup, p+" ") {
			t.Errorf("README.md, Set up: does not say that make test installs %s", p)
		}
	}
	for _, want := range []string{"enabled", "listening"} {
		if !strings.Contains(setup, want) {
			t.Errorf("README.md, Set up: does not say the tests leave no service %s", want)
		}
	}
}

// TestReadmeDocumentsEverySetting: each setting has a line in the README's configuration
// table.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		name := envName(s.key)
		if strings.HasPrefix(s.key, "template_") {
			name = "WXLOOKUP_TEMPLATE_*"
		}
		if !strings.Contains(string(raw), "`"+name+"`") {
			t.Errorf("README.md does not document %s", name)
		}
	}
}
