package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// seedBatch is how many rows one INSERT of Seed carries: large enough that round trips do
// not dominate, small enough to stay far below max_allowed_packet and the 65,535
// placeholders of a prepared statement.
const seedBatch = 1000

// Seed creates the default table (schema.sql, idempotent) in db's database and upserts the
// demo rows DemoRow(0) … DemoRow(n-1), so 18-546 → 车体新厂房3号 is among them for any n ≥ 1.
// Rows are written by multi-row INSERT … ON DUPLICATE KEY UPDATE in batches of 1,000, so a
// second Seed is harmless and rows that did not change keep their updated_at. db needs
// CREATE and INSERT privileges (not the loader's read-only account). Seed is safe for
// concurrent use, though two Seeds of one database only duplicate work.
func Seed(ctx context.Context, db *sql.DB, n int) error {
	if n < 0 {
		return fmt.Errorf("store: seed: %d rows, want n ≥ 0", n)
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("store: seed: create schema: %w", err)
	}
	full, err := db.PrepareContext(ctx, seedInsert(seedBatch))
	if err != nil {
		return fmt.Errorf("store: seed: prepare insert: %w", err)
	}
	defer full.Close()
	args := make([]any, 0, 2*seedBatch)
	for start := 0; start < n; start += seedBatch {
		end := min(start+seedBatch, n)
		args = args[:0]
		for i := start; i < end; i++ {
			k, v := DemoRow(i)
			args = append(args, k, v)
		}
		if end-start == seedBatch {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = db.ExecContext(ctx, seedInsert(end-start), args...)
		}
		if err != nil {
			return fmt.Errorf("store: seed: insert rows %d-%d: %w", start, end-1, err)
		}
	}
	return nil
}

// seedInsert returns the upsert of rows demo rows into the default table.
func seedInsert(rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO `" + DefaultTable + "` (`" + DefaultKeyColumn + "`, `" + DefaultValueColumn + "`) VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?)")
	}
	b.WriteString(" ON DUPLICATE KEY UPDATE `" + DefaultValueColumn + "` = VALUES(`" + DefaultValueColumn + "`)")
	return b.String()
}
