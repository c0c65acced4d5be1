package main

// The API client of connmgr's own commands (connections, apikeys, audit,
// export, import, apply, diff): where the server is and which key to use,
// from flags, CONNMGR_* variables or a profile of the config file, and how
// answers are shown.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/connmgr/connmgr/connections/manifest"
)

// defaultServer is where the client goes without configuration: serve's
// default address.
const defaultServer = "http://127.0.0.1:8080"

// clientFlags are the flags every API-client command takes.
type clientFlags struct {
	server, apiKey, profile, output string
}

// addClientFlags adds the client flags to cmd's persistent flags (so its
// subcommands have them too).
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.server, "server", "", "connmgr's URL [CONNMGR_URL, or the profile's server; default "+defaultServer+"]")
	fs.StringVar(&f.apiKey, "api-key", "", "API key (prefer CONNMGR_API_KEY or a profile: flags show in ps) [CONNMGR_API_KEY]")
	fs.StringVar(&f.profile, "profile", "", "profile of the config file [CONNMGR_PROFILE, else the file's current]")
	fs.StringVarP(&f.output, "output", "o", "table", "table for people, json or yaml for scripts")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return f
}

// fileConfig is the client's config file (CONNMGR_CONFIG, default
// ~/.config/connmgr/config.yaml):
//
//	current: test
//	profiles:
//	  test: {server: http://127.0.0.1:8080, apiKey: cmk_...}
//	  prod: {server: https://connmgr.example.com, apiKeyFile: /run/secrets/connmgr}
//
// A file that holds an apiKey must be readable by its owner only.
type fileConfig struct {
	Current  string                 `yaml:"current"`
	Profiles map[string]fileProfile `yaml:"profiles"`
}

type fileProfile struct {
	Server     string `yaml:"server"`
	APIKey     string `yaml:"apiKey"`
	APIKeyFile string `yaml:"apiKeyFile"`
}

// configPath is where the config file is.
func configPath(getenv func(string) string) string {
	if p := getenv("CONNMGR_CONFIG"); p != "" {
		return p
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "connmgr", "config.yaml")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "connmgr", "config.yaml")
	}
	return ""
}

// loadProfile reads the named profile ("" for the file's current one)
// of the config file; a file that does not exist is no profile, unless
// one was asked for by name.
func loadProfile(getenv func(string) string, name string) (fileProfile, error) {
	path := configPath(getenv)
	if path == "" {
		return fileProfile{}, nil
	}
	data, err := readBounded(path, 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		if getenv("CONNMGR_CONFIG") != "" {
			return fileProfile{}, fmt.Errorf("CONNMGR_CONFIG: %s does not exist", path)
		}
		if name != "" {
			return fileProfile{}, fmt.Errorf("profile %q: the config file %s does not exist", name, path)
		}
		return fileProfile{}, nil
	}
	if err != nil {
		return fileProfile{}, fmt.Errorf("config file: %w", err)
	}
	var cfg fileConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return fileProfile{}, fmt.Errorf("config file %s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if name == "" {
		name = cfg.Current
	}
	if name == "" {
		name = "default"
		if _, ok := cfg.Profiles[name]; !ok {
			return fileProfile{}, nil
		}
	}
	p, ok := cfg.Profiles[name]
	if !ok {
		return fileProfile{}, fmt.Errorf("config file %s has no profile %q", path, name)
	}
	if p.APIKey != "" {
		if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
			return fileProfile{}, fmt.Errorf("config file %s holds an API key and is readable by group or others (mode %v): chmod 600 it", path, info.Mode().Perm())
		}
	}
	if p.APIKeyFile != "" && p.APIKey == "" {
		b, err := readBounded(p.APIKeyFile, 4096)
		if err != nil {
			return fileProfile{}, fmt.Errorf("profile %q: apiKeyFile: %w", name, err)
		}
		p.APIKey = strings.TrimSpace(string(b))
	}
	return p, nil
}

// apiClient talks to one connmgr.
type apiClient struct {
	base   *url.URL
	key    string
	http   *http.Client
	output string
	stdout io.Writer
}

// newClient resolves the client settings: flags, then CONNMGR_URL,
// CONNMGR_API_KEY and CONNMGR_PROFILE, then the profile.
func newClient(f *clientFlags, getenv func(string) string, stdout io.Writer) (*apiClient, error) {
	switch f.output {
	case "table", "json", "yaml":
	default:
		return nil, &usageError{fmt.Sprintf("-o %s: want table, json or yaml", f.output)}
	}
	name := f.profile
	if name == "" {
		name = getenv("CONNMGR_PROFILE")
	}
	prof, err := loadProfile(getenv, name)
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	server := first(f.server, getenv("CONNMGR_URL"), prof.Server, defaultServer)
	key := first(f.apiKey, getenv("CONNMGR_API_KEY"), prof.APIKey)
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &usageError{fmt.Sprintf("server %q: want connmgr's http(s) URL, such as %s", server, defaultServer)}
	}
	if key == "" {
		return nil, &usageError{"no API key: pass --api-key, set CONNMGR_API_KEY, or give the profile an apiKey"}
	}
	return &apiClient{base: u, key: key, http: &http.Client{Timeout: 2 * time.Minute}, output: f.output, stdout: stdout}, nil
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// apiError is a problem+json answer.
type apiError struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	Errors []struct {
		Field  string `json:"field"`
		Reason string `json:"reason"`
	} `json:"errors"`
	// fieldName renders a field for people (documents[2] as a file and
	// document); nil leaves it as it is.
	fieldName func(string) string
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, e.Code)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	for _, fe := range e.Errors {
		f := fe.Field
		if e.fieldName != nil {
			f = e.fieldName(f)
		}
		fmt.Fprintf(&b, "\n  %s: %s", f, fe.Reason)
	}
	return b.String()
}

// response is an answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// request makes a request to path with the client's key.
func (c *apiClient) request(ctx context.Context, method, path string) (*http.Request, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("User-Agent", "connmgr-cli/"+buildVersion())
	return req, nil
}

// do sends a request (body as JSON unless nil) and returns a 2xx answer,
// or the problem as *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body any) (*response, error) {
	req, err := c.request(ctx, method, path)
	if err != nil {
		return nil, err
	}
	req.URL.RawQuery = query.Encode()
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req)
}

// send sends req and reads the answer.
func (c *apiClient) send(req *http.Request) (*response, error) {
	res, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %v", req.Method, c.base.Redacted()+req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode/100 != 2 {
		e := &apiError{Status: res.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code, e.Detail = "error", strings.TrimSpace(http.StatusText(res.StatusCode))
		}
		return nil, e
	}
	return &response{status: res.StatusCode, header: res.Header, body: b}, nil
}

// print writes v as the output format asks: table calls table, json and
// yaml show raw (the server's JSON answer).
func (c *apiClient) print(raw []byte, table func(w io.Writer) error) error {
	switch c.output {
	case "json":
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return err
		}
		b.WriteByte('\n')
		_, err := c.stdout.Write(b.Bytes())
		return err
	case "yaml":
		n, err := manifest.FromJSON(raw)
		if err != nil {
			return err
		}
		enc := yaml.NewEncoder(c.stdout)
		enc.SetIndent(2)
		if err := enc.Encode(n); err != nil {
			return err
		}
		return enc.Close()
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	if err := table(tw); err != nil {
		return err
	}
	return tw.Flush()
}
