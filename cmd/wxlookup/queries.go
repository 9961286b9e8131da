package main

import (
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"wxlookup/examples"
	"wxlookup/server"
	"wxlookup/store"
)

// QueryConfig is one configured query (SPEC section 10): an entry of the file's queries:
// list, or the implicit query the table settings form without one. Its file keys are the
// lower-case field names below (key_column, value_columns, …).
type QueryConfig struct {
	Name string
	// Prefix lists the marks that select the query ("#", "＃"), or Match is a regular
	// expression with one capture group that the message's first number must match (its
	// capture is the key); with neither the query answers any message and must be last.
	Prefix []string
	Match  string
	// The source: a MySQL table (WXLOOKUP_MYSQL_DSN) or a CSV file, whose header names the
	// columns.
	Table         string
	CSV           string
	KeyColumn     string
	ValueColumns  []string
	UpdatedColumn string // poll feed; default updated_at
	// Help is the query's line in the help text; Found and NotFound its reply templates
	// (default: templates.found and templates.not_found).
	Help     string
	Found    string
	NotFound string

	// implicit marks the query the table settings form: errors name those settings.
	implicit bool
	// embedded holds the rows of a demo query built into the binary (CSV names them).
	embedded []byte
}

// queryFields lists the file keys of a query, and how each is read from its YAML node.
var queryFields = map[string]func(q *QueryConfig, n *yaml.Node) error{
	"name":           scalarField(func(q *QueryConfig) *string { return &q.Name }),
	"prefix":         listField(func(q *QueryConfig) *[]string { return &q.Prefix }),
	"match":          scalarField(func(q *QueryConfig) *string { return &q.Match }),
	"table":          scalarField(func(q *QueryConfig) *string { return &q.Table }),
	"csv":            scalarField(func(q *QueryConfig) *string { return &q.CSV }),
	"key_column":     scalarField(func(q *QueryConfig) *string { return &q.KeyColumn }),
	"value_columns":  listField(func(q *QueryConfig) *[]string { return &q.ValueColumns }),
	"updated_column": scalarField(func(q *QueryConfig) *string { return &q.UpdatedColumn }),
	"help":           scalarField(func(q *QueryConfig) *string { return &q.Help }),
	"found":          scalarField(func(q *QueryConfig) *string { return &q.Found }),
	"not_found":      scalarField(func(q *QueryConfig) *string { return &q.NotFound }),
}

func scalarField(dst func(*QueryConfig) *string) func(*QueryConfig, *yaml.Node) error {
	return func(q *QueryConfig, n *yaml.Node) error {
		if n.Kind != yaml.ScalarNode {
			return errors.New("must be a single value")
		}
		*dst(q) = n.Value
		return nil
	}
}

// listField reads a list, or one value (value_columns also "a, b").
func listField(dst func(*QueryConfig) *[]string) func(*QueryConfig, *yaml.Node) error {
	return func(q *QueryConfig, n *yaml.Node) error {
		var items []string
		switch n.Kind {
		case yaml.ScalarNode:
			items = []string{n.Value}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				if c.Kind != yaml.ScalarNode {
					return errors.New("must be a list of values")
				}
				items = append(items, c.Value)
			}
		default:
			return errors.New("must be a value or a list of values")
		}
		*dst(q) = items
		return nil
	}
}

// parseQueries reads the file's queries: list. Unknown keys are an error, like unknown
// settings, so a typo does not silently drop a field.
func parseQueries(path string, node yaml.Node) ([]QueryConfig, error) {
	if node.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("config: %s: queries must be a list of queries (line %d)", path, node.Line)
	}
	qs := make([]QueryConfig, 0, len(node.Content))
	for i, qn := range node.Content {
		if qn.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("config: %s: queries[%d] must be a map of name, prefix, table, … (line %d)", path, i, qn.Line)
		}
		var q QueryConfig
		for j := 0; j+1 < len(qn.Content); j += 2 {
			k, v := qn.Content[j], qn.Content[j+1]
			set, ok := queryFields[k.Value]
			if !ok {
				return nil, fmt.Errorf("config: %s: queries[%d]: unknown field %q (line %d)", path, i, k.Value, k.Line)
			}
			if err := set(&q, v); err != nil {
				return nil, fmt.Errorf("config: %s: queries[%d]: %s %v (line %d)", path, i, k.Value, err, v.Line)
			}
		}
		for i, c := range q.ValueColumns {
			q.ValueColumns[i] = strings.TrimSpace(c)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

// tableSettings are the settings that form the implicit query; with queries: each query
// names its own source, so setting one of these too is an error.
var tableSettings = map[string]bool{"table": true, "key_column": true, "value_columns": true, "updated_column": true, "csv": true}

// validateQueries checks the configured queries, one by one and as a set, and fills their
// defaults; the error is one line naming the query and the field. Without queries: it checks
// nothing (the table settings are checked as the implicit query).
func (c *Config) validateQueries() error {
	if c.Queries == nil {
		return nil
	}
	if c.tableSetBy != "" {
		return fmt.Errorf("config: %s and queries: are both set: with queries: each query names its own table (or csv); remove %s", c.tableSetBy, c.tableSetBy)
	}
	if len(c.Queries) == 0 {
		return errors.New("config: queries: is empty: list at least one query, or remove it to use the table settings")
	}
	compiled := make([]*server.Query, 0, len(c.Queries))
	for i := range c.Queries {
		q := &c.Queries[i]
		if q.Found == "" {
			q.Found = c.Templates.Found
		}
		if q.NotFound == "" {
			q.NotFound = c.Templates.NotFound
		}
		if err := c.checkQuerySource(q); err != nil {
			return err
		}
		sq, err := server.NewQuery(q.spec())
		if err != nil {
			return queryConfigError(err)
		}
		compiled = append(compiled, sq)
	}
	if err := server.CheckQueries(compiled); err != nil {
		return queryConfigError(err)
	}
	return nil
}

// checkQuerySource checks where a configured query reads its rows: a MySQL table (which
// needs WXLOOKUP_MYSQL_DSN) or a CSV file, never both, with a key column and value
// columns; a table's names must be plain SQL identifiers.
func (c *Config) checkQuerySource(q *QueryConfig) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("config: query %q: %s: %s", q.Name, field, fmt.Sprintf(format, args...))
	}
	switch {
	case q.Table != "" && q.CSV != "":
		return bad("csv", "a query reads a table or a CSV file, not both")
	case q.Table == "" && q.CSV == "":
		return bad("table", "is empty: name the query's table (or its csv file)")
	case q.Table != "" && c.MySQLDSN == "":
		return bad("table", "needs WXLOOKUP_MYSQL_DSN (or give the query a csv file)")
	case q.KeyColumn == "":
		return bad("key_column", "is empty")
	case len(q.ValueColumns) == 0:
		return bad("value_columns", "is empty, want at least one column")
	}
	if q.CSV != "" {
		return nil
	}
	if q.UpdatedColumn == "" {
		q.UpdatedColumn = store.DefaultUpdatedColumn
	}
	var me *store.MappingError
	if err := q.mapping().Validate(); errors.As(err, &me) {
		return fmt.Errorf("config: %s: %v", q.setting(me.Field), me.Err)
	} else if err != nil {
		return fmt.Errorf("config: query %q: %w", q.Name, err)
	}
	return nil
}

// queryConfigError words a server.QueryError as a configuration error.
func queryConfigError(err error) error {
	var qe *server.QueryError
	if errors.As(err, &qe) {
		return fmt.Errorf("config: query %q: %s: %v", qe.Query, qe.Field, qe.Err)
	}
	return fmt.Errorf("config: %w", err)
}

// spec is the query as the webhook answers it.
func (q QueryConfig) spec() server.QuerySpec {
	return server.QuerySpec{Name: q.Name, Prefix: q.Prefix, Match: q.Match, Help: q.Help,
		ValueColumns: q.ValueColumns, Found: q.Found, NotFound: q.NotFound}
}

// mapping is the query's table mapping.
func (q QueryConfig) mapping() store.Mapping {
	return store.Mapping{Table: q.Table, KeyColumn: q.KeyColumn, ValueColumns: q.ValueColumns, UpdatedColumn: q.UpdatedColumn}
}

// queryFieldOf names the file key of each field of store.Mapping (MappingError.Field).
var queryFieldOf = map[string]string{"Table": "table", "KeyColumn": "key_column", "ValueColumns": "value_columns", "UpdatedColumn": "updated_column"}

// setting names the setting behind a field of the query's mapping, for errors: the
// environment name for the implicit query (WXLOOKUP_TABLE), else the query and its key.
func (q QueryConfig) setting(mappingField string) string {
	if q.implicit {
		return mappingSettings[mappingField]
	}
	return fmt.Sprintf("query %q: %s", q.Name, queryFieldOf[mappingField])
}

// Demo queries: the rows built into the binary that `wxlookup serve` answers with no
// source configured.
var (
	demoStock = QueryConfig{Name: "stock", Prefix: []string{"#", "＃"}, CSV: "examples/stock.csv (embedded demo)",
		KeyColumn: "sku", ValueColumns: []string{"qty", "bin"}, Help: "发送 #零件号 查库存，例如：#P-100",
		Found: "[{{.Key}}]库存{{.Column.qty}}件，货位{{.Column.bin}}", embedded: examples.StockCSV}
	demoLocations = "examples/locations.csv (embedded demo)"
)

// queryList returns the queries to run, in order: the configured ones; or, without
// queries:, the implicit query named location that the table settings form (SPEC 10),
// which answers any message (an optional leading ? and bare numbers alike), after the demo's
// stock query in demo mode.
func (c *Config) queryList() []QueryConfig {
	if c.Queries != nil {
		return c.Queries
	}
	loc := QueryConfig{Name: server.ImplicitQuery, Table: c.Table, CSV: c.CSV, KeyColumn: c.KeyColumn,
		ValueColumns: c.ValueColumns, UpdatedColumn: c.UpdatedColumn, Found: c.Templates.Found,
		NotFound: c.Templates.NotFound, implicit: true}
	if !c.Demo {
		return []QueryConfig{loc}
	}
	loc.CSV, loc.embedded = demoLocations, examples.LocationsCSV
	return []QueryConfig{demoStock, loc}
}
