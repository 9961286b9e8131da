package store

import (
	"database/sql"
	"testing"
	"time"

	"wxlookup/internal/mariadbtest"
)

func TestSeed(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	tests := []struct {
		name string
		n    int
	}{
		{"none", 0},
		{"one", 1},
		{"partial batch", 2500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, db := seededDB(t, srv, tt.n)
			count := func() int {
				t.Helper()
				var c int
				if err := db.QueryRowContext(testCtx(t), "SELECT COUNT(*) FROM workpiece_location").Scan(&c); err != nil {
					t.Fatal(err)
				}
				return c
			}
			if got := count(); got != tt.n {
				t.Fatalf("got %d rows, want %d", got, tt.n)
			}
			if tt.n > 0 {
				var loc string
				if err := db.QueryRowContext(testCtx(t), "SELECT location FROM workpiece_location WHERE part_no = ?", DemoKey).Scan(&loc); err != nil {
					t.Fatal(err)
				}
				if loc != DemoLocation {
					t.Fatalf("got %q, want %q", loc, DemoLocation)
				}
			}
			// Seeding again is harmless.
			if err := Seed(testCtx(t), db, tt.n); err != nil {
				t.Fatal(err)
			}
			if got := count(); got != tt.n {
				t.Fatalf("after second seed: got %d rows, want %d", got, tt.n)
			}
		})
	}
}

func TestSeedNegative(t *testing.T) {
	if err := Seed(testCtx(t), nil, -1); err == nil {
		t.Fatalf("got no error, want one for n = -1")
	}
}

// BenchmarkSeed1M measures Seed of 1,000,000 rows into an empty database per iteration.
// Run with -benchtime=1x.
func BenchmarkSeed1M(b *testing.B) {
	const n = 1_000_000
	srv := mariadbtest.Shared(b)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		dsn := srv.CreateDatabase(b)
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := Seed(testCtx(b), db, n); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(n/time.Since(start).Seconds(), "rows/s")
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
}
