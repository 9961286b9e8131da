package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// issueQueries is the queries: list of issue 15's example.
const issueQueries = `
queries:
  - name: location                 # label query, status section, audit field
    prefix: ["?", "？"]
    table: workpiece_location
    key_column: part_no
    value_columns: [location]
    found: "[{{.Key}}]的工作台位为[{{.Value}}]"
    not_found: "未找到[{{.Query}}]"
  - name: stock
    prefix: ["#", "＃"]
    table: stock
    key_column: sku
    value_columns: [qty, bin]
    found: "[{{.Key}}] 库存{{.Column.qty}}件，货位{{.Column.bin}}"
`

var mysqlEnv = map[string]string{"WXLOOKUP_MYSQL_DSN": "ro@tcp(127.0.0.1:3306)/plant", "WXLOOKUP_TOKEN": "t"}

func TestQueriesConfigLoads(t *testing.T) {
	path := writeFile(t, "c.yaml", issueQueries+"templates:\n  not_found: \"没有{{.Key}}\"\n")
	c, err := LoadConfig(path, envOf(mysqlEnv))
	if err != nil {
		t.Fatal(err)
	}
	qs := c.queryList()
	if len(qs) != 2 || qs[0].Name != "location" || qs[1].Name != "stock" || c.Demo {
		t.Fatalf("got %+v (demo %v), want location and stock", qs, c.Demo)
	}
	if got := strings.Join(qs[1].ValueColumns, ","); got != "qty,bin" || qs[1].KeyColumn != "sku" || qs[1].Table != "stock" {
		t.Errorf("stock: %+v", qs[1])
	}
	if qs[1].UpdatedColumn != "updated_at" {
		t.Errorf("stock's updated column %q, want the default updated_at", qs[1].UpdatedColumn)
	}
	if qs[0].NotFound != "未找到[{{.Query}}]" || qs[1].NotFound != "没有{{.Key}}" {
		t.Errorf("not-found templates %q and %q, want the query's own and then templates.not_found", qs[0].NotFound, qs[1].NotFound)
	}
}

// TestImplicitQuery: without queries:, the table settings form one catch-all query named
// location; in demo mode the embedded stock query comes first.
func TestImplicitQuery(t *testing.T) {
	c, err := LoadConfig("", envOf(map[string]string{"WXLOOKUP_CSV": "x.csv", "WXLOOKUP_TOKEN": "t", "WXLOOKUP_VALUE_COLUMNS": "location,shelf"}))
	if err != nil {
		t.Fatal(err)
	}
	qs := c.queryList()
	if len(qs) != 1 || qs[0].Name != "location" || qs[0].CSV != "x.csv" || len(qs[0].Prefix) != 0 || qs[0].Match != "" ||
		strings.Join(qs[0].ValueColumns, ",") != "location,shelf" || !qs[0].implicit {
		t.Errorf("implicit query %+v", qs)
	}
	demo, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if qs := demo.queryList(); len(qs) != 2 || qs[0].Name != "stock" || qs[1].Name != "location" || qs[1].embedded == nil {
		t.Errorf("demo queries %+v, want stock then the embedded locations", qs)
	}
}

// TestQueriesConfigErrors: every invalid query is refused at start with one line naming
// the query and the field (or both settings, for table settings beside queries:).
func TestQueriesConfigErrors(t *testing.T) {
	q := func(fields string) string {
		return "queries:\n  - name: stock\n    table: stock\n    key_column: sku\n    value_columns: [qty]\n" + fields
	}
	two := func(a, b string) string {
		return "queries:\n  - name: location\n    table: t1\n    key_column: k\n    value_columns: [v]\n" + a +
			"  - name: stock\n    table: t2\n    key_column: k\n    value_columns: [v]\n" + b
	}
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{"duplicate names", two("    prefix: [\"?\"]\n", "    prefix: [\"#\"]\n") + "  - name: stock\n    csv: s.csv\n    key_column: k\n    value_columns: [v]\n    prefix: $\n",
			nil, `config: query "stock": name: used by two queries`},
		{"overlapping prefixes, full-width", two("    prefix: [\"？\"]\n", "    prefix: [\"?\"]\n"), nil, `config: query "stock": prefix: "?" overlaps "?" of query "location"`},
		{"regex with two groups", q("    match: '^(\\d+)-(\\d+)$'\n"), nil, `config: query "stock": match: "^(\\d+)-(\\d+)$" has 2 capture groups, want exactly one`},
		{"regex that does not compile", q("    match: '^(\\d+$'\n"), nil, `config: query "stock": match: error parsing regexp`},
		{"invalid table identifier", strings.Replace(q(""), "table: stock", "table: \"stock; DROP TABLE x\"", 1), nil, `config: query "stock": table: "stock; DROP TABLE x" is not a plain SQL identifier`},
		{"invalid column identifier", strings.Replace(q(""), "[qty]", "[qty, \"bin-no\"]", 1), nil, `config: query "stock": value_columns: [1] "bin-no" is not a plain SQL identifier`},
		{"template with a missing column", q("    found: \"{{.Column.bin}}\"\n"), nil, `config: query "stock": found: {{.Column.bin}}: no value column "bin" (value_columns: qty)`},
		{"catch-all not last", two("", "    prefix: [\"#\"]\n"), nil, `config: query "location": prefix: a query with neither prefix nor match answers every message, so it must be the last`},
		{"two catch-alls", two("", ""), nil, `config: query "location": prefix: a query with neither prefix nor match`},
		{"table settings in the environment", q(""), map[string]string{"WXLOOKUP_TABLE": "stock"}, `config: WXLOOKUP_TABLE and queries: are both set`},
		{"csv in the environment", q(""), map[string]string{"WXLOOKUP_CSV": "x.csv", "WXLOOKUP_MYSQL_DSN": ""}, `config: WXLOOKUP_CSV and queries: are both set`},
		{"table settings in the file", "value_columns: [location]\n" + q(""), nil, `config: value_columns and queries: are both set`},
		{"table without a DSN", q(""), map[string]string{"WXLOOKUP_MYSQL_DSN": ""}, `config: query "stock": table: needs WXLOOKUP_MYSQL_DSN`},
		{"table and csv", q("    csv: s.csv\n"), nil, `config: query "stock": csv: a query reads a table or a CSV file, not both`},
		{"no key column", strings.Replace(q(""), "    key_column: sku\n", "", 1), nil, `config: query "stock": key_column: is empty`},
		{"unknown field", q("    prefx: [\"#\"]\n"), nil, `queries[0]: unknown field "prefx" (line 6)`},
		{"bad name", strings.Replace(q(""), "name: stock", "name: \"stock levels\"", 1), nil, `config: query "stock levels": name: "stock levels" is not a query name`},
		{"empty list", "queries: []\n", nil, "config: queries: is empty"},
		{"not a list", "queries: stock\n", nil, "queries must be a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range mysqlEnv {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			_, err := LoadConfig(writeFile(t, "c.yaml", tt.file), envOf(env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// TestExampleConfigQueriesLoad: the commented queries: example of examples/config.yaml,
// uncommented, loads (with a DSN, as its tables need one).
func TestExampleConfigQueriesLoad(t *testing.T) {
	raw, err := os.ReadFile("../../examples/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?ms)^# queries:\n(.*?)^# --- end of queries`).FindSubmatch(raw)
	if block == nil {
		t.Fatal("examples/config.yaml has no commented '# queries:' block ending at '# --- end of queries'")
	}
	var lines []string
	for _, l := range strings.Split("queries:\n"+string(block[1]), "\n") {
		lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "#"), " "))
	}
	file := strings.Join(lines, "\n")
	c, err := LoadConfig(writeFile(t, "c.yaml", file), envOf(mysqlEnv))
	if err != nil {
		t.Fatalf("the example's queries do not load: %v\n%s", err, file)
	}
	if qs := c.queryList(); len(qs) != 2 || qs[0].Name != "location" || qs[1].Name != "stock" {
		t.Errorf("got %d queries, want the issue's location and stock:\n%s", len(qs), file)
	}
}
