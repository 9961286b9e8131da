package examples

import (
	"bytes"
	"context"
	"flag"
	"os"
	"testing"

	"wxlookup/cache"
	"wxlookup/store"
)

var update = flag.Bool("update", false, "rewrite locations.csv from store.DemoRow")

// demoRows is how many demo rows locations.csv holds.
const demoRows = 1000

func TestLocationsCSVUpToDate(t *testing.T) {
	var want bytes.Buffer
	if err := store.WriteDemoCSV(&want, demoRows); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("locations.csv", want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(LocationsCSV, want.Bytes()) {
		t.Fatalf("locations.csv differs from store.DemoRow (%d bytes, want %d): run go generate ./examples", len(LocationsCSV), want.Len())
	}
}

func TestLocationsCSVParses(t *testing.T) {
	src, err := store.NewCSV("locations.csv", LocationsCSV, store.Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if _, err := src.Snapshot(context.Background(), func(cache.Row) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != demoRows {
		t.Fatalf("got %d rows, want %d", n, demoRows)
	}
	tests := []struct {
		name, ask, key, location string
	}{
		{"the example", "18-546", "18-546", "车体新厂房3号"},
		{"letter key", "a7-001", "A7-001", "总装车间A区12排"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row, err := src.Get(context.Background(), cache.Key(tt.ask))
			if err != nil {
				t.Fatal(err)
			}
			if row.Key != tt.key || row.Values[0] != tt.location {
				t.Fatalf("got %q → %q, want %q → %q", row.Key, row.Values[0], tt.key, tt.location)
			}
		})
	}
}

func TestStockCSVParses(t *testing.T) {
	src, err := store.NewCSV("stock.csv", StockCSV, store.Mapping{KeyColumn: "sku", ValueColumns: []string{"qty", "bin"}})
	if err != nil {
		t.Fatal(err)
	}
	row, err := src.Get(context.Background(), cache.Key("p-100"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := row.Key+" "+row.Values[0]+" "+row.Values[1], "P-100 120 A-01-03"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
