// Package store holds every SQL string of wxlookup and the sources the cache loader reads:
// MySQL (OpenMySQL) and a CSV file (OpenCSV, NewCSV), both satisfying cache.Source. It also
// owns the default schema (schema.sql), the demo data (DemoRow) and Seed, which fills a
// database with it.
package store
