package store

import _ "embed"

// schema is the DDL of the default table (schema.sql): workpiece_location(part_no, location,
// updated_at), utf8mb4 with a case- and width-insensitive key, InnoDB, an index on
// updated_at. It is one idempotent CREATE TABLE IF NOT EXISTS statement, safe to run on
// every start. Seed runs it.
//
//go:embed schema.sql
var schema string
