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
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
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
}

// configError names the variable that is wrong, in one line.
type configError struct{ variable, reason string }

func (e *configError) Error() string { return e.variable + ": " + e.reason }

type setting struct {
	flag, env, def, usage string
	dst                   *string
}

// parseConfig reads the CONNMGR_* environment, then flags (flags win).
func parseConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	var raw struct {
		addr, dataDir, dbURL, keys, admin, public, egress, schedule, ttl, maxBody, logLevel, webhookURL, webhookSecret string
	}
	settings := []setting{
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
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, s := range settings {
		def := s.def
		if v := getenv(s.env); v != "" {
			def = v
		}
		shown := def
		if s.env == "CONNMGR_ADMIN_TOKEN" || s.env == "CONNMGR_ENCRYPTION_KEYS" || s.env == "CONNMGR_DATABASE_URL" ||
			s.env == "CONNMGR_WEBHOOK_SECRET" || s.env == "CONNMGR_WEBHOOK_URL" {
			shown = "" // never print secrets in usage
		}
		fs.StringVar(s.dst, s.flag, def, s.usage+" ["+s.env+"]")
		if f := fs.Lookup(s.flag); f != nil {
			f.DefValue = shown
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
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
	allow, err := invoke.ParseAllow(raw.egress)
	if err != nil {
		// ParseAllow's errors already name the variable.
		return nil, &configError{"CONNMGR_EGRESS_ALLOW", strings.TrimPrefix(err.Error(), "CONNMGR_EGRESS_ALLOW: ")}
	}
	cfg.EgressAllow = allow
	if _, err := cron.ParseStandard(cfg.RefreshSchedule); err != nil {
		return nil, &configError{"CONNMGR_REFRESH_SCHEDULE", fmt.Sprintf("not a cron spec: %v", err)}
	}
	ttl, err := time.ParseDuration(raw.ttl)
	if err != nil || ttl < time.Second || ttl > 24*time.Hour {
		return nil, &configError{"CONNMGR_DEFAULT_TOKEN_TTL", fmt.Sprintf("want a duration from 1s to 24h, got %q", raw.ttl)}
	}
	cfg.DefaultTokenTTL = ttl
	if cfg.MaxBody, err = parseSize(raw.maxBody); err != nil || cfg.MaxBody < 1024 || cfg.MaxBody > 1<<30 {
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
	if err := cfg.LogLevel.UnmarshalText([]byte(raw.logLevel)); err != nil {
		return nil, &configError{"CONNMGR_LOG_LEVEL", fmt.Sprintf("want debug, info, warn or error, got %q", raw.logLevel)}
	}
	return cfg, nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}

// parseSize reads "10MiB", "512KB" or a plain number of bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, errors.New("bad size")
	}
	return n * mult, nil
}

// newLogger logs JSON, or text on a terminal.
func newLogger(w io.Writer, terminal bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if terminal {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
