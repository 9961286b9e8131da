package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/go-sql-driver/mysql"
	"go.yaml.in/yaml/v3"

	"wxlookup/cache"
	"wxlookup/server"
	"wxlookup/store"
)

// Config is the whole service configuration, read from an optional YAML file and the
// WXLOOKUP_* environment (the environment wins). Every setting's file key is its
// environment name without the WXLOOKUP_ prefix, in lower case.
type Config struct {
	Listen string
	// ListenWhenReady opens the webhook listener only after the first load, so that no
	// request is answered "starting up" by a replica or a successor process that another
	// one could answer (WXLOOKUP_LISTEN_WHEN_READY; default false: listen at once).
	ListenWhenReady bool
	// ReusePort lets a second process listen on the webhook's port (SO_REUSEPORT) for a
	// zero-downtime handover (WXLOOKUP_REUSE_PORT; default false: a port in use is an
	// error, so two servers never silently share one).
	ReusePort         bool
	Path              string
	Token             string
	AppID             string
	AESKey            string
	AESKeyPrevious    string
	RequireEncryption bool // unset: true exactly when an AES key is set (see validate)

	// requireEncryptionSet records that WXLOOKUP_REQUIRE_ENCRYPTION was given, so that an
	// explicit false is told from the unset default.
	requireEncryptionSet bool

	WeComPath   string
	WeComCorpID string
	WeComToken  string
	WeComAESKey string

	MySQLDSN      string
	CSV           string
	Table         string
	KeyColumn     string
	ValueColumns  []string
	UpdatedColumn string

	// Queries are the file's queries: list (SPEC section 10); nil without one, when the
	// table settings above form the one implicit query (see queryList).
	Queries []QueryConfig
	// tableSetBy names the first table setting given (file key or environment name), to
	// refuse it together with queries:.
	tableSetBy string

	// ChangeFeed is how the loader learns of changes: "poll" (the updated column, and a
	// checksum reconcile for deletes) or "binlog" (the row binary log, as a replica).
	ChangeFeed string
	// BinlogServerID is the replica server id of the binlog feed; 0 derives one from the
	// host name and the webhook's port (store.DefaultServerID).
	BinlogServerID uint32
	// BinlogDSN is a DSN with REPLICATION SLAVE and REPLICATION CLIENT; "" uses MySQLDSN.
	BinlogDSN string

	RefreshInterval   time.Duration
	ReconcileInterval time.Duration
	CacheMaxBytes     int64
	// ReloadRate is how many rows a second a reload streams into a serving cache
	// (WXLOOKUP_RELOAD_RATE); 0 leaves it unlimited.
	ReloadRate int

	AdminListen string
	AdminToken  string
	// StaleAfter is the staleness beyond which /readyz answers 503 and the status page
	// is red (WXLOOKUP_STALE_AFTER).
	StaleAfter time.Duration

	TimestampSkew time.Duration
	RateLimit     int // per OpenID per minute; 0 disables
	RateBurst     int
	AllowFile     string // one OpenID per line; "" lets everyone
	AllowTable    string // table of allowed OpenIDs (MySQL source only)
	AllowColumn   string // its OpenID column

	LogLevel  string
	LogFormat string

	// AuditLog is the JSON-lines audit file (WXLOOKUP_AUDIT_LOG; "" is off); with
	// AuditHashKey its lines carry a keyed hash of each OpenID instead of the OpenID.
	AuditLog     string
	AuditHashKey string

	Templates server.TemplateTexts

	// Demo is set when neither a MySQL DSN, a CSV file nor queries are configured: the
	// embedded demo rows and token "demo" are used.
	Demo bool
}

// setting is one configuration entry: its file key, and how to parse it into Config.
type setting struct {
	key   string
	parse func(c *Config, v string) error
	// secret settings are never echoed in errors.
	secret bool
}

// Env returns the environment variable name of a file key.
func envName(key string) string { return "WXLOOKUP_" + strings.ToUpper(key) }

func str(dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

func dur(dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "0" {
			*dst(c) = 0
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("invalid duration %q (want e.g. 1s, 500ms, 5m)", v)
		}
		*dst(c) = d
		return nil
	}
}

func integer(dst func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("invalid count %q (want a whole number ≥ 0)", v)
		}
		*dst(c) = n
		return nil
	}
}

func boolean(dst func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", v)
		}
		*dst(c) = b
		return nil
	}
}

// settings lists every setting, in the order of SPEC section 4.
var settings = []setting{
	{key: "listen", parse: str(func(c *Config) *string { return &c.Listen })},
	{key: "listen_when_ready", parse: boolean(func(c *Config) *bool { return &c.ListenWhenReady })},
	{key: "reuse_port", parse: boolean(func(c *Config) *bool { return &c.ReusePort })},
	{key: "path", parse: str(func(c *Config) *string { return &c.Path })},
	{key: "token", parse: str(func(c *Config) *string { return &c.Token }), secret: true},
	{key: "appid", parse: str(func(c *Config) *string { return &c.AppID })},
	{key: "aes_key", parse: str(func(c *Config) *string { return &c.AESKey }), secret: true},
	{key: "aes_key_previous", parse: str(func(c *Config) *string { return &c.AESKeyPrevious }), secret: true},
	{key: "require_encryption", parse: func(c *Config, v string) error {
		c.requireEncryptionSet = true
		return boolean(func(c *Config) *bool { return &c.RequireEncryption })(c, v)
	}},
	{key: "wecom_path", parse: str(func(c *Config) *string { return &c.WeComPath })},
	{key: "wecom_corp_id", parse: str(func(c *Config) *string { return &c.WeComCorpID })},
	{key: "wecom_token", parse: str(func(c *Config) *string { return &c.WeComToken }), secret: true},
	{key: "wecom_aes_key", parse: str(func(c *Config) *string { return &c.WeComAESKey }), secret: true},
	{key: "mysql_dsn", parse: str(func(c *Config) *string { return &c.MySQLDSN }), secret: true},
	{key: "csv", parse: str(func(c *Config) *string { return &c.CSV })},
	{key: "table", parse: str(func(c *Config) *string { return &c.Table })},
	{key: "key_column", parse: str(func(c *Config) *string { return &c.KeyColumn })},
	{key: "value_columns", parse: func(c *Config, v string) error {
		c.ValueColumns = nil
		for _, col := range strings.Split(v, ",") {
			if col = strings.TrimSpace(col); col != "" {
				c.ValueColumns = append(c.ValueColumns, col)
			}
		}
		if len(c.ValueColumns) == 0 {
			return errors.New("no columns named (want e.g. location or location,shelf)")
		}
		return nil
	}},
	{key: "updated_column", parse: str(func(c *Config) *string { return &c.UpdatedColumn })},
	{key: "change_feed", parse: str(func(c *Config) *string { return &c.ChangeFeed })},
	{key: "binlog_server_id", parse: func(c *Config, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("invalid server id %q (want a whole number from 1 to 4294967295, unique among the database's replicas)", v)
		}
		c.BinlogServerID = uint32(n)
		return nil
	}},
	{key: "binlog_dsn", parse: str(func(c *Config) *string { return &c.BinlogDSN }), secret: true},
	{key: "refresh_interval", parse: dur(func(c *Config) *time.Duration { return &c.RefreshInterval })},
	{key: "reconcile_interval", parse: dur(func(c *Config) *time.Duration { return &c.ReconcileInterval })},
	{key: "cache_max_bytes", parse: func(c *Config, v string) error {
		n, err := humanize.ParseBytes(v)
		if err != nil || n == 0 || n > 1<<50 {
			return fmt.Errorf("invalid size %q (want e.g. 512MiB or 2GiB)", v)
		}
		c.CacheMaxBytes = int64(n)
		return nil
	}},
	{key: "reload_rate", parse: integer(func(c *Config) *int { return &c.ReloadRate })},
	{key: "admin_listen", parse: str(func(c *Config) *string { return &c.AdminListen })},
	{key: "admin_token", parse: str(func(c *Config) *string { return &c.AdminToken }), secret: true},
	{key: "stale_after", parse: dur(func(c *Config) *time.Duration { return &c.StaleAfter })},
	{key: "timestamp_skew", parse: dur(func(c *Config) *time.Duration { return &c.TimestampSkew })},
	{key: "rate_limit", parse: integer(func(c *Config) *int { return &c.RateLimit })},
	{key: "rate_burst", parse: integer(func(c *Config) *int { return &c.RateBurst })},
	{key: "allow_file", parse: str(func(c *Config) *string { return &c.AllowFile })},
	{key: "allow_table", parse: str(func(c *Config) *string { return &c.AllowTable })},
	{key: "allow_column", parse: str(func(c *Config) *string { return &c.AllowColumn })},
	{key: "log_level", parse: str(func(c *Config) *string { return &c.LogLevel })},
	{key: "log_format", parse: str(func(c *Config) *string { return &c.LogFormat })},
	{key: "audit_log", parse: str(func(c *Config) *string { return &c.AuditLog })},
	{key: "audit_hash_key", parse: str(func(c *Config) *string { return &c.AuditHashKey }), secret: true},
	{key: "template_welcome", parse: str(func(c *Config) *string { return &c.Templates.Welcome })},
	{key: "template_help", parse: str(func(c *Config) *string { return &c.Templates.Help })},
	{key: "template_found", parse: str(func(c *Config) *string { return &c.Templates.Found })},
	{key: "template_not_found", parse: str(func(c *Config) *string { return &c.Templates.NotFound })},
	{key: "template_did_you_mean", parse: str(func(c *Config) *string { return &c.Templates.DidYouMean })},
	{key: "template_unauthorised", parse: str(func(c *Config) *string { return &c.Templates.Unauthorised })},
	{key: "template_starting", parse: str(func(c *Config) *string { return &c.Templates.Starting })},
	{key: "template_rate_limited", parse: str(func(c *Config) *string { return &c.Templates.RateLimited })},
	{key: "template_unavailable", parse: str(func(c *Config) *string { return &c.Templates.Unavailable })},
	{key: "template_too_many", parse: str(func(c *Config) *string { return &c.Templates.TooMany })},
}

// DefaultConfig returns the configuration with every default of SPEC section 4 applied.
func DefaultConfig() Config {
	return Config{
		Listen:            server.DefaultListen,
		Path:              server.DefaultPath,
		WeComPath:         server.DefaultWeComPath,
		Table:             store.DefaultTable,
		KeyColumn:         store.DefaultKeyColumn,
		ValueColumns:      []string{store.DefaultValueColumn},
		UpdatedColumn:     store.DefaultUpdatedColumn,
		RefreshInterval:   cache.DefaultRefreshInterval,
		ReconcileInterval: cache.DefaultReconcileInterval,
		CacheMaxBytes:     cache.DefaultMaxBytes,
		ReloadRate:        cache.DefaultReloadRate,
		AdminListen:       server.DefaultAdminListen,
		StaleAfter:        server.DefaultStaleAfter,
		ChangeFeed:        feedPoll,
		TimestampSkew:     server.DefaultTimestampSkew,
		RateLimit:         server.DefaultRatePerMinute,
		RateBurst:         server.DefaultRateBurst,
		AllowColumn:       "openid",
		LogLevel:          "info",
		LogFormat:         "text",
	}
}

// LoadConfig reads the YAML file at path (none when "") and then the environment (looked up
// with getenv), and validates the result. An error is one line naming the setting.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		if err := c.applyFile(path, data); err != nil {
			return c, err
		}
	}
	for _, s := range settings {
		if v, ok := lookup(getenv, envName(s.key)); ok {
			if err := s.parse(&c, v); err != nil {
				return c, fmt.Errorf("config: %s: %s", envName(s.key), redact(s, err))
			}
			if tableSettings[s.key] && c.tableSetBy == "" {
				c.tableSetBy = envName(s.key)
			}
		}
	}
	return c, c.validate()
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return strings.TrimSpace(v), v != ""
}

// applyFile applies the YAML file's settings. Unknown keys are an error, so a typo does not
// silently leave a default in place.
func (c *Config) applyFile(path string, data []byte) error {
	var doc map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		// yaml's type errors run over several lines; start-up errors are one line.
		return fmt.Errorf("config: %s: %s", path, strings.Join(strings.Fields(err.Error()), " "))
	}
	byKey := make(map[string]setting, len(settings))
	for _, s := range settings {
		byKey[s.key] = s
	}
	for key, node := range doc {
		if key == "templates" && node.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(node.Content); i += 2 {
				name := "template_" + node.Content[i].Value
				s, ok := byKey[name]
				if !ok {
					return fmt.Errorf("config: %s: templates.%s is not a template (line %d)", path, node.Content[i].Value, node.Content[i].Line)
				}
				if err := s.parse(c, node.Content[i+1].Value); err != nil {
					return fmt.Errorf("config: %s: templates.%s: %v", path, node.Content[i].Value, err)
				}
			}
			continue
		}
		if key == "queries" {
			qs, err := parseQueries(path, node)
			if err != nil {
				return err
			}
			c.Queries = qs
			continue
		}
		if tableSettings[key] && c.tableSetBy == "" {
			c.tableSetBy = key
		}
		s, ok := byKey[key]
		if !ok {
			return fmt.Errorf("config: %s: unknown setting %q (line %d)", path, key, node.Line)
		}
		v := node.Value
		if node.Kind == yaml.SequenceNode {
			var parts []string
			for _, n := range node.Content {
				parts = append(parts, n.Value)
			}
			v = strings.Join(parts, ",")
		} else if node.Kind != yaml.ScalarNode {
			return fmt.Errorf("config: %s: %s must be a single value (line %d)", path, key, node.Line)
		}
		if err := s.parse(c, strings.TrimSpace(v)); err != nil {
			return fmt.Errorf("config: %s: %s: %s", path, key, redact(s, err))
		}
	}
	return nil
}

// redact hides the value of a secret setting from a parse error.
func redact(s setting, err error) string {
	if s.secret {
		return "invalid value"
	}
	return err.Error()
}

// validate checks the settings that depend on each other, applies demo mode, and names the
// first bad setting.
func (c *Config) validate() error {
	if c.MySQLDSN == "" && c.CSV == "" && c.Queries == nil {
		c.Demo = true
		if c.Token == "" {
			c.Token = "demo"
		}
	}
	if c.MySQLDSN != "" && c.CSV != "" {
		return errors.New("config: WXLOOKUP_MYSQL_DSN and WXLOOKUP_CSV are both set; choose one source")
	}
	if c.Token == "" {
		return errors.New("config: WXLOOKUP_TOKEN is required (the Token set in the Official Account's server configuration)")
	}
	if c.AESKey != "" && len(c.AESKey) != 43 {
		return fmt.Errorf("config: WXLOOKUP_AES_KEY must be 43 characters, got %d", len(c.AESKey))
	}
	if c.AESKeyPrevious != "" && len(c.AESKeyPrevious) != 43 {
		return fmt.Errorf("config: WXLOOKUP_AES_KEY_PREVIOUS must be 43 characters, got %d", len(c.AESKeyPrevious))
	}
	if c.WeComAESKey != "" && len(c.WeComAESKey) != 43 {
		return fmt.Errorf("config: WXLOOKUP_WECOM_AES_KEY must be 43 characters, got %d", len(c.WeComAESKey))
	}
	if !c.requireEncryptionSet {
		c.RequireEncryption = c.AESKey != ""
	}
	if c.RequireEncryption && c.AESKey == "" {
		return errors.New("config: WXLOOKUP_REQUIRE_ENCRYPTION is true but WXLOOKUP_AES_KEY is not set")
	}
	if c.TimestampSkew <= 0 || c.TimestampSkew > server.MaxTimestampSkew {
		return fmt.Errorf("config: WXLOOKUP_TIMESTAMP_SKEW %s: must be more than 0 and at most %s", c.TimestampSkew, server.MaxTimestampSkew)
	}
	if c.RefreshInterval <= 0 {
		return errors.New("config: WXLOOKUP_REFRESH_INTERVAL must be positive")
	}
	if c.ReconcileInterval < c.RefreshInterval {
		return fmt.Errorf("config: WXLOOKUP_RECONCILE_INTERVAL (%s) must not be shorter than WXLOOKUP_REFRESH_INTERVAL (%s)", c.ReconcileInterval, c.RefreshInterval)
	}
	if c.AllowTable != "" && c.MySQLDSN == "" {
		return errors.New("config: WXLOOKUP_ALLOW_TABLE needs WXLOOKUP_MYSQL_DSN")
	}
	if c.AllowTable != "" && c.AllowFile != "" {
		return errors.New("config: WXLOOKUP_ALLOW_TABLE and WXLOOKUP_ALLOW_FILE are both set; choose one")
	}
	if c.Listen == "" {
		return errors.New("config: WXLOOKUP_LISTEN is empty")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("config: WXLOOKUP_LOG_FORMAT %q: want text or json", c.LogFormat)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: WXLOOKUP_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
	if err := c.validateDSN(); err != nil {
		return err
	}
	if err := c.validateAdmin(); err != nil {
		return err
	}
	if err := c.validateStaleAfter(); err != nil {
		return err
	}
	if err := c.validateChangeFeed(); err != nil {
		return err
	}
	if err := c.mapping().Validate(); err != nil {
		var me *store.MappingError
		if errors.As(err, &me) {
			return fmt.Errorf("config: %s: %v", mappingSettings[me.Field], me.Err)
		}
		return fmt.Errorf("config: %w", err)
	}
	return c.validateQueries()
}

// mappingSettings names the setting of each field of store.Mapping (MappingError.Field).
var mappingSettings = map[string]string{"Table": "WXLOOKUP_TABLE", "KeyColumn": "WXLOOKUP_KEY_COLUMN",
	"ValueColumns": "WXLOOKUP_VALUE_COLUMNS", "UpdatedColumn": "WXLOOKUP_UPDATED_COLUMN"}

// mapping is the table mapping of the configuration.
func (c *Config) mapping() store.Mapping {
	return store.Mapping{Table: c.Table, KeyColumn: c.KeyColumn, ValueColumns: c.ValueColumns, UpdatedColumn: c.UpdatedColumn}
}

// Change feeds (WXLOOKUP_CHANGE_FEED).
const (
	feedPoll   = "poll"
	feedBinlog = "binlog"
)

// validateChangeFeed checks WXLOOKUP_CHANGE_FEED and the binlog settings: the binlog feed
// follows MySQL, so it needs WXLOOKUP_MYSQL_DSN.
func (c *Config) validateChangeFeed() error {
	switch c.ChangeFeed {
	case feedPoll:
	case feedBinlog:
		if c.MySQLDSN == "" {
			return errors.New("config: WXLOOKUP_CHANGE_FEED=binlog follows MySQL's binary log: it needs WXLOOKUP_MYSQL_DSN")
		}
	default:
		return fmt.Errorf("config: WXLOOKUP_CHANGE_FEED %q: want poll or binlog", c.ChangeFeed)
	}
	if c.ChangeFeed != feedBinlog && (c.BinlogDSN != "" || c.BinlogServerID != 0) {
		return errors.New("config: WXLOOKUP_BINLOG_DSN and WXLOOKUP_BINLOG_SERVER_ID need WXLOOKUP_CHANGE_FEED=binlog")
	}
	if c.BinlogDSN != "" {
		if _, err := mysql.ParseDSN(c.BinlogDSN); err != nil {
			return fmt.Errorf("config: WXLOOKUP_BINLOG_DSN is not a DSN the MySQL driver can parse (%s); %s", dsnProblem(c.BinlogDSN, err), dsnForm)
		}
	}
	return nil
}

// validateAdmin refuses an admin listener that other machines can reach without
// WXLOOKUP_ADMIN_TOKEN: it serves profiles, the status page and the reload action.
func (c *Config) validateAdmin() error {
	host, _, err := net.SplitHostPort(c.AdminListen)
	if err != nil {
		return fmt.Errorf("config: WXLOOKUP_ADMIN_LISTEN %q: want host:port, e.g. 127.0.0.1:9090", c.AdminListen)
	}
	if c.AdminToken != "" || isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("config: WXLOOKUP_ADMIN_LISTEN %s is not a loopback address: set WXLOOKUP_ADMIN_TOKEN "+
		"(every admin route but /healthz and /readyz then needs it) or listen on 127.0.0.1", c.AdminListen)
}

// isLoopbackHost reports whether a listen address's host is loopback only: localhost or a
// loopback IP. "" (every interface) and other names are not.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validateStaleAfter checks WXLOOKUP_STALE_AFTER: a threshold no longer than one refresh
// interval would flag every healthy pause between refreshes.
func (c *Config) validateStaleAfter() error {
	if c.StaleAfter <= c.RefreshInterval {
		return fmt.Errorf("config: WXLOOKUP_STALE_AFTER (%s) must be longer than WXLOOKUP_REFRESH_INTERVAL (%s), e.g. 60s", c.StaleAfter, c.RefreshInterval)
	}
	return nil
}

// dsnForm is the shape of a go-sql-driver DSN, shown when WXLOOKUP_MYSQL_DSN is not one.
const dsnForm = "want user:password@tcp(host:3306)/database, e.g. wxlookup_ro:PASSWORD@tcp(db.plant.local:3306)/plant?readTimeout=5s"

// validateDSN checks that the driver can parse WXLOOKUP_MYSQL_DSN, so a malformed one stops
// start-up with its reason and the right form instead of failing every connection later.
// The line never shows the DSN's password.
func (c *Config) validateDSN() error {
	if c.MySQLDSN == "" {
		return nil
	}
	if _, err := mysql.ParseDSN(c.MySQLDSN); err != nil {
		return fmt.Errorf("config: WXLOOKUP_MYSQL_DSN is not a DSN the MySQL driver can parse (%s); %s", dsnProblem(c.MySQLDSN, err), dsnForm)
	}
	return nil
}

// dsnProblem says what is wrong with dsn from the driver's error, without the password:
// the driver's own words unless they hold a piece of it.
func dsnProblem(dsn string, err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "default addr for network") {
		// The part before "/" was read as a network name: "host:3306" or "mysql://…".
		return "the address must be written tcp(host:port)"
	}
	msg = strings.TrimPrefix(msg, "invalid DSN: ")
	creds := dsn
	if i := strings.LastIndexByte(dsn, '@'); i >= 0 {
		creds = dsn[:i]
	}
	if _, pw, ok := strings.Cut(creds, ":"); ok {
		n := min(3, len(pw))
		for i := 0; n > 0 && i+n <= len(pw); i++ {
			if strings.Contains(msg, pw[i:i+n]) {
				return "it does not parse"
			}
		}
	}
	return msg
}
