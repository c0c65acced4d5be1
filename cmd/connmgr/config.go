package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/robfig/cron/v3"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security/keyring"
)

// config is connmgr's configuration: each field has a CONNMGR_* variable
// and a flag of the same name.
type config struct {
	Addr            string
	DataDir         string
	DatabaseURL     string
	EncryptionKeys  string
	AdminToken      string
	PublicURL       string
	EgressAllow     []netip.Prefix
	RefreshSchedule string
	DefaultTokenTTL time.Duration
	MaxBody         int64
	LogLevel        slog.Level
	WebhookURL      string
	WebhookSecret   string
	TokenTimeout    time.Duration
	MaxConnections  int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	MetricsAddr     string

	// ring is EncryptionKeys parsed, nil when it is unset.
	ring *keyring.KeyRing
	// importIdentity is CONNMGR_IMPORT_IDENTITY read, nil when it is unset.
	importIdentity *keyring.Identity
}

// configError names the variable that is wrong, in one line.
type configError struct{ variable, reason string }

func (e *configError) Error() string { return e.variable + ": " + e.reason }

type setting struct {
	flag, env, def, usage string
	dst                   *string
}

// rawSettings are the settings as text, before parsing.
type rawSettings struct {
	addr, dataDir, dbURL, keys, admin, public, egress, schedule, ttl, maxBody, logLevel, webhookURL, webhookSecret,
	tokenTimeout, maxConns, readTimeout, writeTimeout, metricsAddr, importIdentity string
}

// settingList lists the settings of serve (and the commands that open the
// database), each reading into raw.
func settingList(raw *rawSettings) []setting {
	return []setting{
		{"addr", "CONNMGR_ADDR", "127.0.0.1:8080", "listen address", &raw.addr},
		{"data-dir", "CONNMGR_DATA_DIR", "./data", "SQLite file, generated key file and admin token", &raw.dataDir},
		{"database-url", "CONNMGR_DATABASE_URL", "", "postgres://... (unset: SQLite in the data dir)", &raw.dbURL},
		{"encryption-keys", "CONNMGR_ENCRYPTION_KEYS", "", "id:base64key,... the first encrypts (unset: generated key file)", &raw.keys},
		{"admin-token", "CONNMGR_ADMIN_TOKEN", "", "bootstrap admin API key (prefer the variable: flags show in ps)", &raw.admin},
		{"public-url", "CONNMGR_PUBLIC_URL", "", "external base URL, for the OAuth callback (default http://{addr})", &raw.public},
		{"egress-allow", "CONNMGR_EGRESS_ALLOW", "", "CIDRs outbound calls may reach besides public addresses", &raw.egress},
		{"refresh-schedule", "CONNMGR_REFRESH_SCHEDULE", "@every 15s", "cron spec of the token refresh job", &raw.schedule},
		{"default-token-ttl", "CONNMGR_DEFAULT_TOKEN_TTL", "1h", "token lifetime assumed when expires_in is missing", &raw.ttl},
		{"max-body", "CONNMGR_MAX_BODY", "10MiB", "request body limit", &raw.maxBody},
		{"log-level", "CONNMGR_LOG_LEVEL", "info", "debug, info, warn or error", &raw.logLevel},
		{"webhook-url", "CONNMGR_WEBHOOK_URL", "", "where status alerts are POSTed (unset: no alerts)", &raw.webhookURL},
		{"webhook-secret", "CONNMGR_WEBHOOK_SECRET", "", "HMAC-SHA256 key that signs the alerts (16+ bytes)", &raw.webhookSecret},
		{"token-timeout", "CONNMGR_TOKEN_TIMEOUT", "15s", "bound of one token request", &raw.tokenTimeout},
		{"max-connections", "CONNMGR_MAX_CONNECTIONS", "1024", "concurrent client connections accepted", &raw.maxConns},
		{"read-timeout", "CONNMGR_READ_TIMEOUT", "60s", "time to read a request, body included (invokes: their connection's timeout)", &raw.readTimeout},
		{"write-timeout", "CONNMGR_WRITE_TIMEOUT", "60s", "time to write an answer (invokes: their connection's timeout)", &raw.writeTimeout},
		{"metrics-addr", "CONNMGR_METRICS_ADDR", "", "serve /metrics on this address without an API key (unset: on the main address, for viewer and admin keys)", &raw.metricsAddr},
		{"import-identity", "CONNMGR_IMPORT_IDENTITY", "", "age identity (AGE-SECRET-KEY-1...), or a 0600 file holding it, that opens the ${sealed:...} secrets of applied files (unset: they are refused)", &raw.importIdentity},
	}
}

// commandSettings lists, by flag name, the settings of each command that
// opens the database; serve takes all of them. A command reads only its
// own settings: the others keep their defaults, whatever the environment
// says, so that e.g. migrate in a container configured for serve does not
// fail on a setting it does not use.
var commandSettings = map[string][]string{
	"migrate":     {"data-dir", "database-url", "log-level"},
	"keys rotate": {"data-dir", "database-url", "encryption-keys", "log-level"},
}

// commandSummary is the first line of each command's help.
var commandSummary = map[string]string{
	"serve":       "run the service",
	"migrate":     "apply the database migrations and exit",
	"keys rotate": "re-encrypt every stored secret under the first key of CONNMGR_ENCRYPTION_KEYS (safe while serving; run it again after a failure)",
}

// secretSettings are never shown in usage, not even as a default from the
// environment.
var secretSettings = []string{"CONNMGR_ADMIN_TOKEN", "CONNMGR_ENCRYPTION_KEYS", "CONNMGR_DATABASE_URL",
	"CONNMGR_WEBHOOK_SECRET", "CONNMGR_WEBHOOK_URL", "CONNMGR_IMPORT_IDENTITY"}

// parseConfig reads the CONNMGR_* environment, then flags (flags win), of
// the settings of command name. Asked for help (-h, --help), it prints the
// command's flags to stdout and returns errHelpShown.
func parseConfig(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) (*config, error) {
	var raw rawSettings
	settings := settingList(&raw)
	own := commandSettings[name]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	help := slices.ContainsFunc(args, func(a string) bool { return slices.Contains(helpFlags, a) })
	if help {
		fs.SetOutput(stdout)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: connmgr %s [flags]\n\n%s.\n\nflags (each also read from its CONNMGR_* variable; flags win):\n", name, commandSummary[name])
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\n\"connmgr --help\" lists the commands.")
	}
	for _, s := range settings {
		def := s.def
		if own != nil && !slices.Contains(own, s.flag) {
			*s.dst = def // not a setting of this command
			continue
		}
		if v := getenv(s.env); v != "" {
			def = v
		}
		fs.StringVar(s.dst, s.flag, def, s.usage+" ["+s.env+"]")
		if slices.Contains(secretSettings, s.env) {
			fs.Lookup(s.flag).DefValue = "" // never print secrets in usage
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) && help {
			return nil, errHelpShown
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (connmgr %s --help lists the flags)", fs.Arg(0), name)
	}
	cfg := &config{Addr: raw.addr, DataDir: raw.dataDir, DatabaseURL: raw.dbURL, EncryptionKeys: raw.keys,
		AdminToken: raw.admin, RefreshSchedule: raw.schedule,
		WebhookURL: raw.webhookURL, WebhookSecret: raw.webhookSecret}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, &configError{"CONNMGR_ADDR", fmt.Sprintf("want host:port, got %q", cfg.Addr)}
	}
	if cfg.DataDir == "" {
		return nil, &configError{"CONNMGR_DATA_DIR", "must not be empty"}
	}
	cfg.DataDir = filepath.Clean(cfg.DataDir)
	if cfg.EncryptionKeys != "" {
		// Parsed here, so that bad keys stop the start before anything
		// is written.
		ring, err := keyring.ParseKeyRing(cfg.EncryptionKeys)
		if err != nil {
			return nil, &configError{"CONNMGR_ENCRYPTION_KEYS", err.Error()}
		}
		cfg.ring = ring
	}
	if cfg.DatabaseURL != "" && !strings.HasPrefix(cfg.DatabaseURL, "postgres://") && !strings.HasPrefix(cfg.DatabaseURL, "postgresql://") {
		return nil, &configError{"CONNMGR_DATABASE_URL", "must be a postgres:// or postgresql:// URL"}
	}
	if cfg.AdminToken != "" && len(cfg.AdminToken) < 32 {
		return nil, &configError{"CONNMGR_ADMIN_TOKEN", "must be at least 32 characters"}
	}
	cfg.PublicURL = strings.TrimRight(raw.public, "/")
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + cfg.Addr
	}
	if u, err := url.Parse(cfg.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &configError{"CONNMGR_PUBLIC_URL", fmt.Sprintf("want an absolute http(s) URL, got %q", raw.public)}
	}
	allow, err := outbound.ParseAllow(raw.egress)
	if err != nil {
		// ParseAllow's errors already name the variable.
		return nil, &configError{"CONNMGR_EGRESS_ALLOW", strings.TrimPrefix(err.Error(), "CONNMGR_EGRESS_ALLOW: ")}
	}
	cfg.EgressAllow = allow
	if _, err := cron.ParseStandard(cfg.RefreshSchedule); err != nil {
		hint := ""
		if _, derr := time.ParseDuration(cfg.RefreshSchedule); derr == nil {
			hint = fmt.Sprintf(" (for an interval write %q)", "@every "+cfg.RefreshSchedule)
		}
		return nil, &configError{"CONNMGR_REFRESH_SCHEDULE", fmt.Sprintf("not a cron spec: %v%s", err, hint)}
	}
	ttl, err := time.ParseDuration(raw.ttl)
	if err != nil || ttl < time.Second || ttl > 24*time.Hour {
		return nil, &configError{"CONNMGR_DEFAULT_TOKEN_TTL", fmt.Sprintf("want a duration from 1s to 24h, got %q", raw.ttl)}
	}
	cfg.DefaultTokenTTL = ttl
	if cfg.MaxBody, err = units.RAMInBytes(raw.maxBody); err != nil || cfg.MaxBody < 1024 || cfg.MaxBody > 1<<30 {
		return nil, &configError{"CONNMGR_MAX_BODY", fmt.Sprintf("want a size from 1KiB to 1GiB such as 10MiB, got %q", raw.maxBody)}
	}
	if cfg.WebhookURL != "" {
		if err := connections.CheckURL(cfg.WebhookURL); err != nil {
			return nil, &configError{"CONNMGR_WEBHOOK_URL", "the URL " + err.Error()}
		}
		if len(cfg.WebhookSecret) < 16 {
			return nil, &configError{"CONNMGR_WEBHOOK_SECRET", "must be set, at least 16 characters, when CONNMGR_WEBHOOK_URL is"}
		}
	}
	for _, d := range []struct {
		env, raw string
		dst      *time.Duration
		min, max time.Duration
	}{
		{"CONNMGR_TOKEN_TIMEOUT", raw.tokenTimeout, &cfg.TokenTimeout, time.Second, 5 * time.Minute},
		{"CONNMGR_READ_TIMEOUT", raw.readTimeout, &cfg.ReadTimeout, time.Second, time.Hour},
		{"CONNMGR_WRITE_TIMEOUT", raw.writeTimeout, &cfg.WriteTimeout, time.Second, time.Hour},
	} {
		v, err := time.ParseDuration(d.raw)
		if err != nil || v < d.min || v > d.max {
			return nil, &configError{d.env, fmt.Sprintf("want a duration from %s to %s such as 30s, got %q", d.min, d.max, d.raw)}
		}
		*d.dst = v
	}
	if cfg.MaxConnections, err = strconv.Atoi(raw.maxConns); err != nil || cfg.MaxConnections < 16 || cfg.MaxConnections > 1_000_000 {
		return nil, &configError{"CONNMGR_MAX_CONNECTIONS", fmt.Sprintf("want a number from 16 to 1000000, got %q", raw.maxConns)}
	}
	cfg.MetricsAddr = raw.metricsAddr
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return nil, &configError{"CONNMGR_METRICS_ADDR", fmt.Sprintf("want host:port, got %q", cfg.MetricsAddr)}
		}
	}
	if raw.importIdentity != "" {
		if cfg.importIdentity, err = keyring.LoadIdentity(raw.importIdentity); err != nil {
			return nil, &configError{"CONNMGR_IMPORT_IDENTITY", err.Error()}
		}
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(raw.logLevel)); err != nil {
		return nil, &configError{"CONNMGR_LOG_LEVEL", fmt.Sprintf("want debug, info, warn or error, got %q", raw.logLevel)}
	}
	return cfg, nil
}

// newLogger logs JSON, or text on a terminal. Durations are written with
// their unit ("1.5s"), from every package: slog's JSON handler would write
// a bare number of nanoseconds.
func newLogger(w io.Writer, terminal bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationText}
	if terminal {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// durationText renders a duration attribute as text with its unit.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// knownVars lists the CONNMGR_* variables connmgr reads, besides those of
// the settings: test and client variables.
var knownVars = []string{"CONNMGR_URL", "CONNMGR_API_KEY", "CONNMGR_PROFILE", "CONNMGR_CONFIG",
	"CONNMGR_IMPORT_IDENTITY", "CONNMGR_TEST_DATABASE_URL", "CONNMGR_CHROMIUM", "CONNMGR_BROWSER_ARTIFACTS",
	"CONNMGR_REQUIRE_NODE"}

// warnUnknown logs a warning for each CONNMGR_* variable in environ that
// connmgr does not know, naming the closest known one: a typo in a
// variable's name otherwise silently leaves its default in place.
func warnUnknown(log *slog.Logger, environ []string) {
	known := append(settingVars(), knownVars...)
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "CONNMGR_") || value == "" || slices.Contains(known, name) {
			continue
		}
		best, dist := "", 1<<30
		for _, k := range known {
			if d := levenshtein(name, k); d < dist {
				best, dist = k, d
			}
		}
		log.Warn("unknown environment variable ignored", "variable", name, "did_you_mean", best)
	}
}

// settingVars returns the variable of every setting.
func settingVars() []string {
	var out []string
	for _, s := range settingList(&rawSettings{}) {
		out = append(out, s.env)
	}
	return out
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
