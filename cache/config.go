package cache

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config. A zero field in Config means its default.
const (
	// DefaultMaxBytes is the cache budget (WXLOOKUP_CACHE_MAX_BYTES).
	DefaultMaxBytes = 512 << 20
	// DefaultRefreshInterval is the incremental refresh period (WXLOOKUP_REFRESH_INTERVAL).
	DefaultRefreshInterval = time.Second
	// DefaultReconcileInterval is the period of one reconcile pass over every key range,
	// which finds rows deleted from a polled database (WXLOOKUP_RECONCILE_INTERVAL).
	DefaultReconcileInterval = 10 * time.Second
	// DefaultRangeRows is how many rows a key range of the reconcile holds when cut.
	DefaultRangeRows = 4096
	// DefaultReadThroughTimeout is the hard deadline of one read-through query.
	DefaultReadThroughTimeout = 300 * time.Millisecond
	// DefaultReadThroughLimit is the number of read-through queries allowed at once.
	DefaultReadThroughLimit = 16
	// DefaultNegativeTTL is how long a read-through "not found" is remembered.
	DefaultNegativeTTL = 10 * time.Second
	// DefaultMaxBackoff caps the delay between retries of a failed loader step.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultReloadRate is how many rows a second a reload streams into a serving cache
	// (WXLOOKUP_RELOAD_RATE): a million rows in about four seconds.
	DefaultReloadRate = 250_000
)

// Modes: how changes reach the cache after the snapshot (Config.Mode, Status.Mode).
const (
	// ModePoll asks a Poller for the rows changed every RefreshInterval, and reconciles
	// by key ranges (RangeSource) to find deleted rows (WXLOOKUP_CHANGE_FEED=poll).
	ModePoll = "poll"
	// ModeBinlog follows a Follower's stream of committed changes (WXLOOKUP_CHANGE_FEED=binlog).
	ModeBinlog = "binlog"
	// ModeCSV is ModePoll for a source that reports its deletes itself (a CSV file); it
	// differs only in the name Status.Mode shows.
	ModeCSV = "csv"
)

// Config configures a Cache. A zero field means the matching Default constant; a negative
// one is invalid. The cmd package fills it from flags, the config file and the environment.
type Config struct {
	// MaxBytes is the budget: the summed cost of all entries (key, canonical key, reply
	// line and a fixed per-entry overhead) and the bytes of the "did you mean" index of
	// their keys (Cache.Suggest). A table whose cost fits is held completely, and
	// a miss is a definitive "not found"; a larger one is cached partially and misses read
	// through the source.
	MaxBytes int64
	// RefreshInterval is the period of incremental refreshes (Poller.Changes). It also caps
	// the retry back-off, so the loader recovers within one interval of the source's return.
	RefreshInterval time.Duration
	// Mode is how changes reach the cache after the snapshot: ModePoll (the zero value),
	// ModeBinlog or ModeCSV. ModeBinlog needs a source that is a Follower, the others a
	// Poller. Status.Mode reports it.
	Mode string
	// ReconcileInterval is the period of one reconcile pass (poll modes): every key range
	// of a RangeSource is compared with its checksum once per pass, one range every
	// ReconcileInterval/ranges, so the database sees a small, steady load. A source that is
	// only a KeyLister has all its keys read once per pass instead.
	ReconcileInterval time.Duration
	// RangeRows is how many rows a key range holds when a snapshot or a re-read cuts it.
	RangeRows int
	// ReadThroughTimeout is the hard deadline of a read-through Source.Get.
	ReadThroughTimeout time.Duration
	// ReadThroughLimit bounds concurrent read-through queries; a miss that finds every slot
	// taken fails at once with ErrBusy.
	ReadThroughLimit int
	// NegativeTTL is how long a read-through "not found" is answered from memory.
	NegativeTTL time.Duration
	// MaxBackoff caps the delay between retries of a failed loader step, a reconnect of
	// the change feed included (the refresh interval caps it further; see Cache.Start).
	MaxBackoff time.Duration
	// ReloadRate bounds how many rows a second a snapshot streams into the cache once it
	// has been warmed (Reload, a CSV file's change, the binlog feed's resnapshot), so that
	// a reload spreads its CPU over seconds instead of taking a core from the replies for
	// its duration. The first load is not limited: nothing is answered from the cache
	// before it. Negative means no limit.
	ReloadRate int
	// Render appends the reply line stored for a row (the server's "found" template already
	// applied) to dst and returns the extended slice, as the append functions of strconv
	// do. nil means DefaultRender, "[key] v1 v2". It is called by the loader and on
	// read-through, never on the hot path, and must be safe for concurrent use (read-throughs
	// run beside the loader). It must not keep dst or the row, nor modify the row; the
	// cache copies the line into the entry's own memory.
	Render func(dst []byte, r Row) []byte
	// Logger receives loader errors and state changes; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the cache and loader metrics; nil registers none.
	Registerer prometheus.Registerer
	// Query names the configured query this cache serves (SPEC section 10): the value of
	// the const label query on its metrics, so that the caches of several queries can
	// register on one Registerer. "" registers them without the label.
	Query string
	// Now is the clock for staleness, timestamps and negative-entry expiry; nil means
	// time.Now. Tests set it to move time.
	Now func() time.Time
}

// minMaxBytes is the smallest budget accepted: a few entries.
const minMaxBytes = 4 << 10

// withDefaults returns cfg with zero fields replaced by their defaults, or an error naming
// the first invalid setting.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.MaxBytes == 0:
		cfg.MaxBytes = DefaultMaxBytes
	case cfg.MaxBytes < minMaxBytes:
		return cfg, fmt.Errorf("cache: MaxBytes (WXLOOKUP_CACHE_MAX_BYTES) must be at least %d, got %d", minMaxBytes, cfg.MaxBytes)
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"RefreshInterval (WXLOOKUP_REFRESH_INTERVAL)", &cfg.RefreshInterval, DefaultRefreshInterval},
		{"ReconcileInterval (WXLOOKUP_RECONCILE_INTERVAL)", &cfg.ReconcileInterval, DefaultReconcileInterval},
		{"ReadThroughTimeout", &cfg.ReadThroughTimeout, DefaultReadThroughTimeout},
		{"NegativeTTL", &cfg.NegativeTTL, DefaultNegativeTTL},
		{"MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff},
	}
	for _, d := range durations {
		switch {
		case *d.d == 0:
			*d.d = d.def
		case *d.d < 0:
			return cfg, fmt.Errorf("cache: %s must be positive, got %s", d.name, *d.d)
		}
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModePoll
	case ModePoll, ModeBinlog, ModeCSV:
	default:
		return cfg, fmt.Errorf("cache: Mode (WXLOOKUP_CHANGE_FEED) must be %q, %q or %q, got %q", ModePoll, ModeBinlog, ModeCSV, cfg.Mode)
	}
	switch {
	case cfg.RangeRows == 0:
		cfg.RangeRows = DefaultRangeRows
	case cfg.RangeRows < 0:
		return cfg, fmt.Errorf("cache: RangeRows must be positive, got %d", cfg.RangeRows)
	}
	if cfg.ReloadRate == 0 {
		cfg.ReloadRate = DefaultReloadRate
	}
	switch {
	case cfg.ReadThroughLimit == 0:
		cfg.ReadThroughLimit = DefaultReadThroughLimit
	case cfg.ReadThroughLimit < 0:
		return cfg, fmt.Errorf("cache: ReadThroughLimit must be positive, got %d", cfg.ReadThroughLimit)
	}
	if cfg.Render == nil {
		cfg.Render = DefaultRender
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}
