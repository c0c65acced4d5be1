package main

// connmgr's API-client commands. They only call the API and show its
// answers: plans, diffs and checks are the server's (POST
// /api/v1/connections:apply), so a script calling the API directly gets
// the same.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// usageError is a command line that cannot be run: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exitCode makes a command exit with code; err (when set) is printed.
type exitCode struct {
	code int
	err  error
}

func (e *exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCode) Unwrap() error { return e.err }

// env is what the client commands read from outside.
type cliEnv struct {
	getenv         func(string) string
	stdout, stderr io.Writer
}

func (e *cliEnv) client(cmd *cobra.Command, f *clientFlags) (*apiClient, error) {
	return newClient(f, e.getenv, cmd.OutOrStdout())
}

// clientCommands returns the API-client commands.
func clientCommands(e *cliEnv) []*cobra.Command {
	return []*cobra.Command{connectionsCommand(e), apikeysCommand(e), auditCommand(e), exportCommand(e),
		applyCommand(e, "apply", "apply files of connections: create, update or leave each, idempotently"),
		applyCommand(e, "import", "apply files made by connmgr export (the same as apply)"),
		diffCommand(e)}
}

// connectionNames completes connection names from the server.
func connectionNames(e *cliEnv, f *clientFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := e.client(cmd, f)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		res, err := c.do(cmd.Context(), "GET", "/api/v1/connections", url.Values{"q": {prefix}, "limit": {"100"}}, nil)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var list struct{ Items []struct{ Name string } }
		_ = json.Unmarshal(res.body, &list)
		var out []cobra.Completion
		for _, it := range list.Items {
			if strings.HasPrefix(it.Name, prefix) {
				out = append(out, it.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

type connItem struct {
	Name         string `json:"name"`
	Role         string `json:"role"`
	BaseURL      string `json:"baseUrl"`
	Status       string `json:"status"`
	StatusReason string `json:"statusReason"`
	Version      int64  `json:"version"`
	Security     struct {
		Policy string `json:"policy"`
	} `json:"security"`
	Warnings []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"warnings"`
}

func connectionsCommand(e *cliEnv) *cobra.Command {
	cmd := &cobra.Command{Use: "connections", Aliases: []string{"connection", "conn"},
		Short: "list, read, create, apply, delete, test, refresh and consent connections",
		Args:  cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	f := addClientFlags(cmd)
	names := connectionNames(e, f)

	var filter struct {
		role, policy, status, q string
		warnings                bool
	}
	list := &cobra.Command{Use: "list", Short: "list connections (every page), with their status and naming warnings", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {"500"}}
			for k, v := range map[string]string{"role": filter.role, "policy": filter.policy, "status": filter.status, "q": filter.q} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var items []json.RawMessage
			for {
				res, err := c.do(cmd.Context(), "GET", "/api/v1/connections", q, nil)
				if err != nil {
					return err
				}
				var page struct {
					Items      []json.RawMessage `json:"items"`
					NextCursor string            `json:"nextCursor"`
				}
				if err := json.Unmarshal(res.body, &page); err != nil {
					return err
				}
				items = append(items, page.Items...)
				if page.NextCursor == "" {
					break
				}
				q.Set("cursor", page.NextCursor)
			}
			raw, _ := json.Marshal(map[string]any{"items": items})
			return c.print(raw, func(w io.Writer) error {
				fmt.Fprintln(w, "NAME\tROLE\tPOLICY\tSTATUS\tVERSION\tWARNINGS")
				var notes []string
				for _, r := range items {
					var it connItem
					_ = json.Unmarshal(r, &it)
					var codes []string
					for _, wn := range it.Warnings {
						codes = append(codes, wn.Code)
						notes = append(notes, it.Name+": "+wn.Message)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", it.Name, it.Role, it.Security.Policy, it.Status, it.Version, orDash(strings.Join(codes, ",")))
				}
				if filter.warnings && len(notes) > 0 {
					fmt.Fprintln(w)
					for _, n := range notes {
						fmt.Fprintln(w, "warning: "+n)
					}
				}
				return nil
			})
		}}
	list.Flags().StringVar(&filter.role, "role", "", "only this role (INVOKE, TRIGGER, TRIGGER_INVOKE)")
	list.Flags().StringVar(&filter.policy, "policy", "", "only this security policy")
	list.Flags().StringVar(&filter.status, "status", "", "only this status (DRAFT, CONFIGURED, ERROR, NEEDS_CONSENT)")
	list.Flags().StringVarP(&filter.q, "query", "q", "", "name or keyword substring")
	list.Flags().BoolVar(&filter.warnings, "warnings", false, "print each naming warning's message under the table")

	get := &cobra.Command{Use: "get NAME", Short: "read a connection (secrets show as ********)", Args: cobra.ExactArgs(1),
		ValidArgsFunction: names, RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			res, err := c.do(cmd.Context(), "GET", "/api/v1/connections/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return c.print(res.body, func(w io.Writer) error {
				var it connItem
				_ = json.Unmarshal(res.body, &it)
				fmt.Fprintf(w, "name\t%s\nrole\t%s\nbaseUrl\t%s\npolicy\t%s\nstatus\t%s\n", it.Name, it.Role, it.BaseURL, it.Security.Policy, it.Status)
				if it.StatusReason != "" {
					fmt.Fprintf(w, "reason\t%s\n", it.StatusReason)
				}
				fmt.Fprintf(w, "version\t%d\n", it.Version)
				for _, wn := range it.Warnings {
					fmt.Fprintf(w, "warning\t%s\n", wn.Message)
				}
				return nil
			})
		}}

	var createFiles []string
	var createPlain bool
	create := &cobra.Command{Use: "create -f FILE", Short: "create the connections of files (fails for one that exists; apply updates)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			l, err := loadDocuments(createFiles, loadOptions{getenv: e.getenv, allowPlain: createPlain})
			if err != nil {
				return err
			}
			for i, d := range l.docs {
				var doc struct {
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
					Spec map[string]any `json:"spec"`
				}
				if err := json.Unmarshal(d, &doc); err != nil || doc.Spec == nil {
					return fmt.Errorf("%s: not a connection document", l.where(i))
				}
				doc.Spec["name"] = doc.Metadata.Name
				res, err := c.do(cmd.Context(), "POST", "/api/v1/connections", nil, doc.Spec)
				if err != nil {
					return fmt.Errorf("%s: %w", l.where(i), err)
				}
				if err := c.print(res.body, func(w io.Writer) error {
					var it connItem
					_ = json.Unmarshal(res.body, &it)
					fmt.Fprintf(w, "created %s (status %s)\n", it.Name, it.Status)
					for _, wn := range it.Warnings {
						fmt.Fprintf(w, "warning: %s\n", wn.Message)
					}
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		}}
	create.Flags().StringArrayVarP(&createFiles, "filename", "f", nil, "file of connection documents (YAML or JSON)")
	create.Flags().BoolVar(&createPlain, "allow-plain-secrets", false, "accept secret values written in the files")
	_ = create.MarkFlagRequired("filename")

	var ifMatch string
	del := &cobra.Command{Use: "delete NAME", Short: "delete a connection with its tokens", Args: cobra.ExactArgs(1), ValidArgsFunction: names,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			path := "/api/v1/connections/" + url.PathEscape(args[0])
			if ifMatch != "" {
				return c.deleteIfMatch(cmd.Context(), path, ifMatch, args[0])
			}
			if _, err := c.do(cmd.Context(), "DELETE", path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted %s\n", args[0])
			return nil
		}}
	del.Flags().StringVar(&ifMatch, "if-match", "", "delete only if the connection is still at this version")

	post := func(use, short, suffix string, show func(w io.Writer, body []byte) error) *cobra.Command {
		return &cobra.Command{Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1), ValidArgsFunction: names,
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := e.client(cmd, f)
				if err != nil {
					return err
				}
				res, err := c.do(cmd.Context(), "POST", "/api/v1/connections/"+url.PathEscape(args[0])+suffix, nil, nil)
				if err != nil {
					return err
				}
				if err := c.print(res.body, func(w io.Writer) error { return show(w, res.body) }); err != nil {
					return err
				}
				var r struct{ Result string }
				if json.Unmarshal(res.body, &r) == nil && r.Result == "FAILURE" {
					return &exitCode{code: 1}
				}
				return nil
			}}
	}
	test := post("test", "test a connection: obtain its credential and call the target (exit 1 on FAILURE)", "/test", func(w io.Writer, b []byte) error {
		var r struct {
			Result, Detail string
			LatencyMs      int64
			Steps          []struct{ Step, Result, Detail string }
		}
		_ = json.Unmarshal(b, &r)
		fmt.Fprintf(w, "%s\t%s\t%dms\n", r.Result, r.Detail, r.LatencyMs)
		for _, s := range r.Steps {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", s.Step, s.Result, s.Detail)
		}
		return nil
	})
	refresh := post("refresh", "obtain a new token now (OAuth policies)", "/token/refresh", func(w io.Writer, b []byte) error {
		var r struct {
			ExpiresAt string `json:"expiresAt"`
			LastError string `json:"lastError"`
		}
		_ = json.Unmarshal(b, &r)
		fmt.Fprintf(w, "token refreshed; expires at %s\n", r.ExpiresAt)
		return nil
	})
	consent := post("consent", "start consent (authorization code): prints the URL to open in a browser", "/consent", func(w io.Writer, b []byte) error {
		var r struct {
			AuthorizationURL string `json:"authorizationUrl"`
			ExpiresAt        string `json:"expiresAt"`
		}
		_ = json.Unmarshal(b, &r)
		fmt.Fprintf(w, "open this URL in a browser before %s:\n%s\n", r.ExpiresAt, r.AuthorizationURL)
		return nil
	})
	cmd.AddCommand(list, get, create, applyCommand(e, "apply", "apply files of connections (as connmgr apply)"), del, test, refresh, consent)
	return cmd
}

func (c *apiClient) deleteIfMatch(ctx context.Context, path, version, name string) error {
	if _, err := strconv.ParseInt(version, 10, 64); err != nil {
		return &usageError{"--if-match: want a version number, such as 3"}
	}
	req, err := c.request(ctx, "DELETE", path)
	if err != nil {
		return err
	}
	req.Header.Set("If-Match", `"`+version+`"`)
	if _, err := c.send(req); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "deleted %s\n", name)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func apikeysCommand(e *cliEnv) *cobra.Command {
	cmd := &cobra.Command{Use: "apikeys", Short: "list, create and revoke connmgr's API keys (admin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	f := addClientFlags(cmd)
	list := &cobra.Command{Use: "list", Short: "list API keys (never the keys themselves)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			res, err := c.do(cmd.Context(), "GET", "/api/v1/apikeys", nil, nil)
			if err != nil {
				return err
			}
			return c.print(res.body, func(w io.Writer) error {
				var l struct {
					Items []struct {
						ID, Name, Role, Prefix, CreatedAt string
						Connections                       []string
					}
				}
				_ = json.Unmarshal(res.body, &l)
				fmt.Fprintln(w, "ID\tNAME\tROLE\tPREFIX\tCONNECTIONS\tCREATED")
				for _, k := range l.Items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, k.Prefix, orDash(strings.Join(k.Connections, ",")), k.CreatedAt)
				}
				return nil
			})
		}}
	var nk struct {
		name, role, expires string
		conns               []string
	}
	create := &cobra.Command{Use: "create", Short: "create an API key; it is shown once", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			body := map[string]any{"name": nk.name, "role": nk.role}
			if len(nk.conns) > 0 {
				body["connections"] = nk.conns
			}
			if nk.expires != "" {
				body["expiresAt"] = nk.expires
			}
			res, err := c.do(cmd.Context(), "POST", "/api/v1/apikeys", nil, body)
			if err != nil {
				return err
			}
			return c.print(res.body, func(w io.Writer) error {
				var k struct{ ID, Name, Role, Key string }
				_ = json.Unmarshal(res.body, &k)
				fmt.Fprintf(w, "created %s (%s, id %s). The key, shown once:\n%s\n", k.Name, k.Role, k.ID, k.Key)
				return nil
			})
		}}
	create.Flags().StringVar(&nk.name, "name", "", "the key's name (who or what uses it)")
	create.Flags().StringVar(&nk.role, "role", "", "admin, developer, invoker or viewer")
	create.Flags().StringSliceVar(&nk.conns, "connections", nil, "connection name patterns (invoker keys), e.g. Conn_REST_Orders_*")
	create.Flags().StringVar(&nk.expires, "expires-at", "", "RFC 3339 time after which the key stops working")
	_ = create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "developer", "invoker", "viewer"}, cobra.ShellCompDirectiveNoFileComp))
	revoke := &cobra.Command{Use: "revoke ID", Short: "revoke an API key at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(cmd, f)
			if err != nil {
				return err
			}
			if _, err := c.do(cmd.Context(), "DELETE", "/api/v1/apikeys/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked %s\n", args[0])
			return nil
		}}
	cmd.AddCommand(list, create, revoke)
	return cmd
}

func auditCommand(e *cliEnv) *cobra.Command {
	var q struct{ connection, actor, action, since, until, limit string }
	cmd := &cobra.Command{Use: "audit", Short: "read the audit log, newest first", Args: cobra.NoArgs}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := e.client(cmd, f)
		if err != nil {
			return err
		}
		v := url.Values{}
		for k, s := range map[string]string{"connection": q.connection, "actor": q.actor, "action": q.action, "since": q.since, "until": q.until, "limit": q.limit} {
			if s != "" {
				v.Set(k, s)
			}
		}
		res, err := c.do(cmd.Context(), "GET", "/api/v1/audit", v, nil)
		if err != nil {
			return err
		}
		return c.print(res.body, func(w io.Writer) error {
			var l struct {
				Items []struct {
					At, Actor, Action, Connection string
					Detail                        map[string]any
				}
			}
			_ = json.Unmarshal(res.body, &l)
			fmt.Fprintln(w, "AT\tACTOR\tACTION\tCONNECTION\tDETAIL")
			for _, it := range l.Items {
				d, _ := json.Marshal(it.Detail)
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", it.At, it.Actor, it.Action, orDash(it.Connection), d)
			}
			return nil
		})
	}
	fl := cmd.Flags()
	fl.StringVar(&q.connection, "connection", "", "only events of this connection")
	fl.StringVar(&q.actor, "actor", "", "only events of this actor (API key name)")
	fl.StringVar(&q.action, "action", "", "only this action, e.g. connection.updated")
	fl.StringVar(&q.since, "since", "", "RFC 3339 time")
	fl.StringVar(&q.until, "until", "", "RFC 3339 time")
	fl.StringVar(&q.limit, "limit", "", "at most this many events (1-500)")
	return cmd
}

// envRefRE finds the variables an export refers to.
var envRefRE = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}`)

func exportCommand(e *cliEnv) *cobra.Command {
	var o struct {
		role, policy, status, q, prefix, selector, sealTo, format, dir string
		refresh                                                        bool
	}
	cmd := &cobra.Command{Use: "export", Short: "write connections as files that apply and import read back (admin)", Args: cobra.NoArgs,
		Long: `Writes every connection (or those the filters select) as connection documents, YAML by
default. Secrets become ${env:CONN_<NAME>_<FIELD>} references, listed on stderr and in the
file's header; with --seal-to RECIPIENT (the target connmgr's age public key) each secret is
sealed for the target instead, so the files can sit in git. Tokens are never exported;
--include-refresh-tokens (only with --seal-to) adds the sealed refresh tokens of
authorization-code connections, so they do not need consent again.`}
	f := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := e.client(cmd, f)
		if err != nil {
			return err
		}
		format := o.format
		if format == "" {
			format = "yaml"
			if f.output == "json" {
				format = "json"
			}
		}
		v := url.Values{"format": {format}}
		for k, s := range map[string]string{"role": o.role, "policy": o.policy, "status": o.status, "q": o.q, "prefix": o.prefix,
			"selector": o.selector, "sealTo": o.sealTo} {
			if s != "" {
				v.Set(k, s)
			}
		}
		if o.refresh {
			v.Set("includeRefreshTokens", "true")
		}
		res, err := c.do(cmd.Context(), "GET", "/api/v1/export", v, nil)
		if err != nil {
			return err
		}
		n := res.header.Get("Connmgr-Export-Count")
		if o.dir != "" {
			if format != "yaml" {
				return &usageError{"--dir writes YAML files: leave --format unset"}
			}
			files, err := writeExportDir(o.dir, res.body)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "exported %s connections to %d files in %s\n", n, files, o.dir)
		} else if _, err := c.stdout.Write(res.body); err != nil {
			return err
		}
		vars := envRefRE.FindAllStringSubmatch(string(res.body), -1)
		if len(vars) > 0 {
			fmt.Fprintf(e.stderr, "set these %d variables before applying the export:\n", len(vars))
			for _, m := range vars {
				fmt.Fprintln(e.stderr, "  "+m[1])
			}
		}
		return nil
	}
	fl := cmd.Flags()
	fl.StringVar(&o.role, "role", "", "only this role")
	fl.StringVar(&o.policy, "policy", "", "only this security policy")
	fl.StringVar(&o.status, "status", "", "only this status")
	fl.StringVarP(&o.q, "query", "q", "", "name or keyword substring")
	fl.StringVar(&o.prefix, "prefix", "", "only names starting with this")
	fl.StringVarP(&o.selector, "selector", "l", "", "only connections with these labels: key=value,key=value")
	fl.StringVar(&o.sealTo, "seal-to", "", "seal secrets for this age recipient (age1...), the target's CONNMGR_IMPORT_IDENTITY public key")
	fl.BoolVar(&o.refresh, "include-refresh-tokens", false, "with --seal-to: add authorization-code connections' refresh tokens, sealed")
	fl.StringVar(&o.format, "format", "", "yaml (default) or json")
	fl.StringVar(&o.dir, "dir", "", "write one file per connection (NAME.yaml) into this directory")
	return cmd
}

// writeExportDir splits a YAML export into one file per connection.
func writeExportDir(dir string, stream []byte) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	parts := strings.Split("\n"+string(stream), "\n---\n")
	n := 0
	for _, p := range parts[1:] {
		var doc struct {
			Metadata struct{ Name string } `yaml:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(p), &doc); err != nil || doc.Metadata.Name == "" {
			return n, fmt.Errorf("the export holds a document without metadata.name")
		}
		header := "# connmgr export of " + doc.Metadata.Name + ". Apply with: connmgr apply -f FILE\n"
		if vars := envRefRE.FindAllStringSubmatch(p, -1); len(vars) > 0 {
			header += "# Secrets are not exported: set these variables before applying:\n"
			for _, m := range vars {
				header += "#   " + m[1] + "\n"
			}
		}
		text := header + "---\n" + p
		if !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, doc.Metadata.Name+".yaml"), []byte(text), 0o644); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// applyFlags are the flags of apply, import and diff.
type applyFlags struct {
	files            []string
	dryRun, prune    bool
	selector, prefix string
	allowPlain       bool
}

func addApplyFlags(cmd *cobra.Command, a *applyFlags, dryRun bool) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&a.files, "filename", "f", nil, "file or directory of connection documents (YAML or JSON); repeatable")
	_ = cmd.MarkFlagRequired("filename")
	if dryRun {
		fl.BoolVar(&a.dryRun, "dry-run", false, "print the plan, change nothing")
	}
	fl.BoolVar(&a.prune, "prune", false, "delete the connections in scope (--selector, --prefix) that no file declares")
	fl.StringVarP(&a.selector, "selector", "l", "", "prune only connections with these labels: key=value,key=value")
	fl.StringVar(&a.prefix, "prefix", "", "prune only connections whose name starts with this")
	fl.BoolVar(&a.allowPlain, "allow-plain-secrets", false, "accept secret values written in the files (they end up in git, shell history and CI logs)")
}

// plan is the server's plan answer.
type plan struct {
	DryRun  bool           `json:"dryRun"`
	Summary map[string]int `json:"summary"`
	Items   []struct {
		Name         string `json:"name"`
		Action       string `json:"action"`
		Document     *int   `json:"document"`
		Version      int64  `json:"version"`
		RefreshToken bool   `json:"refreshToken"`
		Changes      []struct {
			Field, Old, New, Change string
			Secret                  bool
		} `json:"changes"`
		Warnings []struct{ Code, Message string } `json:"warnings"`
	} `json:"items"`
}

// sendPlan loads the files and posts them to connections:apply.
func sendPlan(cmd *cobra.Command, e *cliEnv, c *apiClient, a *applyFlags, dryRun bool) (*plan, []byte, *loaded, error) {
	l, err := loadDocuments(a.files, loadOptions{getenv: e.getenv, allowPlain: a.allowPlain})
	if err != nil {
		return nil, nil, nil, err
	}
	body := map[string]any{"documents": l.docs, "dryRun": dryRun, "prune": a.prune}
	if a.prefix != "" {
		body["prefix"] = a.prefix
	}
	if a.selector != "" {
		sel := map[string]string{}
		for part := range strings.SplitSeq(a.selector, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k == "" {
				return nil, nil, nil, &usageError{"--selector: want key=value,key=value"}
			}
			sel[k] = v
		}
		body["selector"] = sel
	}
	res, err := c.do(cmd.Context(), "POST", "/api/v1/connections:apply", nil, body)
	var ae *apiError
	if errors.As(err, &ae) {
		ae.fieldName = func(f string) string { return documentField(l, f) }
	}
	if err != nil {
		return nil, nil, l, err
	}
	var p plan
	if err := json.Unmarshal(res.body, &p); err != nil {
		return nil, nil, l, err
	}
	return &p, res.body, l, nil
}

var docFieldRE = regexp.MustCompile(`^documents\[(\d+)\]\.?`)

// documentField renders documents[i].spec.x as "file.yaml#2 (Name): spec.x".
func documentField(l *loaded, f string) string {
	m := docFieldRE.FindStringSubmatch(f)
	if m == nil {
		return f
	}
	i, _ := strconv.Atoi(m[1])
	rest := f[len(m[0]):]
	if rest == "" {
		return l.where(i)
	}
	return l.where(i) + ": " + rest
}

// showPlan writes a plan for people.
func showPlan(w io.Writer, p *plan, applied bool) {
	verb := map[string]string{"create": "create", "update": "update", "delete": "delete", "unchanged": "unchanged"}
	if applied {
		verb = map[string]string{"create": "created", "update": "updated", "delete": "deleted", "unchanged": "unchanged"}
	}
	for _, it := range p.Items {
		fmt.Fprintf(w, "%s\t%s", it.Name, verb[it.Action])
		if it.Version > 0 && it.Action != "delete" {
			fmt.Fprintf(w, "\tversion %d", it.Version)
		}
		fmt.Fprintln(w)
		for _, ch := range it.Changes {
			switch {
			case ch.Secret:
				fmt.Fprintf(w, "\t  %s: (secret) %s\n", ch.Field, ch.Change)
			case it.Action == "create":
				fmt.Fprintf(w, "\t  %s: %s\n", ch.Field, ch.New)
			default:
				fmt.Fprintf(w, "\t  %s: %s -> %s\n", ch.Field, orNone(ch.Old), orNone(ch.New))
			}
		}
		if it.RefreshToken {
			fmt.Fprintf(w, "\t  token.refreshToken: imported (the first use refreshes)\n")
		}
		for _, wn := range it.Warnings {
			fmt.Fprintf(w, "\t  warning: %s\n", wn.Message)
		}
	}
	s := p.Summary
	changes := s["create"] + s["update"] + s["delete"]
	switch {
	case changes == 0:
		fmt.Fprintf(w, "no changes: %d connections are as declared\n", s["unchanged"])
	case applied:
		fmt.Fprintf(w, "%d created, %d updated, %d deleted, %d unchanged\n", s["create"], s["update"], s["delete"], s["unchanged"])
	default:
		fmt.Fprintf(w, "plan: %d to create, %d to update, %d to delete, %d unchanged (dry run: nothing changed)\n",
			s["create"], s["update"], s["delete"], s["unchanged"])
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func applyCommand(e *cliEnv, use, short string) *cobra.Command {
	a := &applyFlags{}
	cmd := &cobra.Command{Use: use + " -f PATH...", Short: short, Args: cobra.NoArgs,
		Long: short + `.

Every document of every file is read, its ${env:NAME} and ${file:PATH} references resolved
and its secrets checked before anything is sent; the server validates every document before
it writes any. Updates carry If-Match. --dry-run prints the plan (secrets only as changed or
unchanged); --prune also deletes what no file declares, limited to --selector or --prefix.`}
	f := addClientFlags(cmd)
	addApplyFlags(cmd, a, true)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := e.client(cmd, f)
		if err != nil {
			return err
		}
		p, raw, _, err := sendPlan(cmd, e, c, a, a.dryRun)
		if err != nil {
			return err
		}
		return c.print(raw, func(w io.Writer) error {
			showPlan(w, p, !a.dryRun)
			return nil
		})
	}
	return cmd
}

func diffCommand(e *cliEnv) *cobra.Command {
	a := &applyFlags{}
	cmd := &cobra.Command{Use: "diff -f PATH...", Short: "show how the running connmgr differs from files (exit 0 same, 1 different, 2 error)",
		Args: cobra.NoArgs}
	f := addClientFlags(cmd)
	addApplyFlags(cmd, a, false)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := e.client(cmd, f)
		if err != nil {
			return &exitCode{code: 2, err: err}
		}
		p, raw, _, err := sendPlan(cmd, e, c, a, true)
		if err != nil {
			return &exitCode{code: 2, err: err}
		}
		if err := c.print(raw, func(w io.Writer) error {
			var changed []string
			for _, it := range p.Items {
				if it.Action != "unchanged" {
					changed = append(changed, it.Name)
				}
			}
			if len(changed) == 0 {
				fmt.Fprintf(w, "no differences: %d connections are as the files declare\n", p.Summary["unchanged"])
				return nil
			}
			showPlan(w, p, false)
			return nil
		}); err != nil {
			return &exitCode{code: 2, err: err}
		}
		if p.Summary["create"]+p.Summary["update"]+p.Summary["delete"] > 0 {
			return &exitCode{code: 1}
		}
		return nil
	}
	return cmd
}
