// Package examples holds the demo data that wxlookup serves when no database is configured.
package examples

import _ "embed"

// LocationsCSV is examples/locations.csv embedded in the binary, so the demo runs from any
// directory: 1,000 rows under the header "part_no,location", starting with
// 18-546 → 车体新厂房3号 and A7-001. It is generated from store.DemoRow (regenerate with
// go generate) and must be treated as read-only; it is safe for concurrent reads.
//
//go:generate go test -run ^TestLocationsCSVUpToDate$ -update .
//go:embed locations.csv
var LocationsCSV []byte

// StockCSV is examples/stock.csv embedded in the binary: the demo's second query (`#P-100`),
// a few parts under the header "sku,qty,bin", P-100 → 120 in bin A-01-03 among them. It must
// be treated as read-only; it is safe for concurrent reads.
//
//go:embed stock.csv
var StockCSV []byte
