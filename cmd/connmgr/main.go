// Command connmgr runs the connection manager, and is a client of a
// running one.
//
//	connmgr [serve] [flags]        run the service (the default)
//	connmgr migrate [flags]        apply database migrations and exit
//	connmgr keys rotate [flags]    re-encrypt every stored secret under the first key
//	connmgr keys generate [--id]   print a new key for CONNMGR_ENCRYPTION_KEYS
//	connmgr keys identity          print a new age identity for CONNMGR_IMPORT_IDENTITY
//	connmgr version                print the version (also --version)
//	connmgr connections ...        list|get|create|apply|delete|test|refresh|consent
//	connmgr apikeys ...            list|create|revoke
//	connmgr audit                  read the audit log
//	connmgr export                 write connections as files
//	connmgr apply|import -f PATH   apply files of connections
//	connmgr diff -f PATH           how the service differs from files
//	connmgr completion SHELL       shell completion script
//	connmgr help [command]         list the commands, or one command's flags (also --help)
//
// The commands of the service (serve, migrate, keys) read CONNMGR_*
// variables and flags as before; the client commands talk to a running
// connmgr (--server/CONNMGR_URL, --api-key/CONNMGR_API_KEY, or a profile
// of ~/.config/connmgr/config.yaml).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/connmgr/connmgr/security/keyring"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errHelpShown is returned when help was asked for and printed.
var errHelpShown = errors.New("help shown")

// helpFlags are the arguments that ask for help, at the top level or of
// a command.
var helpFlags = []string{"-h", "-help", "--help"}

// run runs the command line args and returns the exit code: 0, 1 when a
// client command's operation failed (or diff found differences), 2 for a
// command line or configuration that is wrong and for a service command
// that failed.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) int {
	root := newRoot(getenv, stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ec *exitCode
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	case errors.As(err, &ec) && ec.err == nil:
		return ec.code
	case errors.Is(err, flag.ErrHelp):
		return 2 // the flag package printed the usage after its error
	}
	// A client command that could not do its job exits 1; a command line
	// or configuration that is wrong, and a service command that failed,
	// exit 2 (as connmgr always has).
	code := 2
	var ue *usageError
	switch {
	case errors.As(err, &ec):
		code = ec.code
	case errors.As(err, &ue):
	case cmd != nil && cmd.Flags().Lookup("server") != nil:
		code = 1
	}
	fmt.Fprintln(stderr, "connmgr:", err)
	return code
}

// rootUsage is the top-level help: every command, the nested ones too.
const rootUsage = `usage: connmgr <command> [flags]

service commands (configured by CONNMGR_* variables and flags):
  serve          run the service (the default when no command is given)
  migrate        apply the database migrations and exit
  keys rotate    re-encrypt every stored secret under the first key of CONNMGR_ENCRYPTION_KEYS
  keys generate  print a new key for CONNMGR_ENCRYPTION_KEYS
  keys identity  print a new age identity for CONNMGR_IMPORT_IDENTITY, and its recipient
  version        print the version

client commands (talk to a running connmgr: --server/CONNMGR_URL, --api-key/CONNMGR_API_KEY,
or --profile/CONNMGR_PROFILE of the config file CONNMGR_CONFIG, ~/.config/connmgr/config.yaml):
  connections    list|get|create|apply|delete|test|refresh|consent
  apikeys        list|create|revoke
  audit          read the audit log
  export         write connections as files that apply reads back
  apply          apply files of connections (-f PATH...; --dry-run, --prune)
  import         apply files made by export (the same as apply)
  diff           show how the running connmgr differs from files (exit 0, 1 or 2)

  completion     print a shell completion script (bash, zsh, fish, powershell)
  help           list the commands, or show one command's flags: connmgr help <command>

Every flag of a service command has a CONNMGR_* variable (--addr is CONNMGR_ADDR); flags win.
"connmgr <command> --help" lists the flags of that command.
`

// newRoot builds the command tree.
func newRoot(getenv func(string) string, stdout io.Writer, stderr *os.File) *cobra.Command {
	root := &cobra.Command{Use: "connmgr", Short: "connmgr holds the credentials of integrations' connections",
		SilenceErrors: true, SilenceUsage: true, DisableFlagParsing: true,
		// Arguments that are not flags name a command, and an unknown one
		// is an error; flags are serve's (connmgr --addr ... serves).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
				return &usageError{fmt.Sprintf("unknown command %q; connmgr --help lists the commands", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) > 0 && slices.Contains(helpFlags, args[0]):
				fmt.Fprint(stdout, rootUsage)
				return nil
			case len(args) > 0 && (args[0] == "-version" || args[0] == "--version"):
				return printVersion(stdout, args[1:])
			}
			return serve(cmd.Context(), args, getenv, stdout, stderr)
		}}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		if cmd == root {
			fmt.Fprint(stdout, rootUsage)
			return
		}
		w := cmd.OutOrStdout()
		fmt.Fprintln(w, first(cmd.Long, cmd.Short))
		fmt.Fprintln(w)
		fmt.Fprint(w, cmd.UsageString())
	})
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{fmt.Sprintf("%v (connmgr %s --help lists the flags)", err, strings.TrimPrefix(cmd.CommandPath(), "connmgr "))}
	})
	root.CompletionOptions.HiddenDefaultCmd = false

	// The service commands parse their own flags (the flag package, as
	// before), so that their behaviour and help stay what they were.
	service := func(use, short string, run func(ctx context.Context, args []string) error, help func()) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, DisableFlagParsing: true, SilenceErrors: true, SilenceUsage: true,
			RunE: func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), args) }}
		c.SetHelpFunc(func(*cobra.Command, []string) { help() })
		return c
	}
	configHelp := func(name string) func() {
		return func() { _, _ = parseConfig(name, []string{"--help"}, getenv, stdout, stderr) }
	}
	root.AddCommand(service("serve", "run the service", func(ctx context.Context, args []string) error {
		return serve(ctx, args, getenv, stdout, stderr)
	}, configHelp("serve")))
	root.AddCommand(service("migrate", "apply the database migrations and exit", func(ctx context.Context, args []string) error {
		return migrate(ctx, args, getenv, stdout, stderr)
	}, configHelp("migrate")))
	keys := &cobra.Command{Use: "keys", Short: "rotate or generate encryption keys, generate an import identity",
		Args: cobra.ArbitraryArgs, RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Sprintf("unknown command %q of keys; connmgr keys --help lists them", args[0])}
			}
			return &usageError{"usage: connmgr keys rotate|generate|identity (connmgr --help lists the commands)"}
		}}
	keys.AddCommand(service("rotate", "re-encrypt every stored secret under the first key", func(ctx context.Context, args []string) error {
		return rotateKeys(ctx, args, getenv, stdout, stderr)
	}, configHelp("keys rotate")))
	keys.AddCommand(service("generate", "print a new key for CONNMGR_ENCRYPTION_KEYS", func(_ context.Context, args []string) error {
		return generateKey(args, stdout, stderr)
	}, func() { _ = generateKey([]string{"--help"}, stdout, stderr) }))
	keys.AddCommand(&cobra.Command{Use: "identity", Short: "print a new age identity for CONNMGR_IMPORT_IDENTITY (stdout) and its recipient (stderr)",
		Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error {
			id, recipient, err := keyring.GenerateIdentity()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "# public key: %s\n%s\n", recipient, id)
			fmt.Fprintf(stderr, "Public key (export --seal-to): %s\nKeep the identity in a 0600 file and point CONNMGR_IMPORT_IDENTITY at it.\n", recipient)
			return nil
		}})
	root.AddCommand(keys)
	root.AddCommand(service("version", "print the version", func(_ context.Context, args []string) error {
		return printVersion(stdout, args)
	}, func() { fmt.Fprintln(stdout, "usage: connmgr version (or connmgr --version): print the version") }))
	e := &cliEnv{getenv: getenv, stdout: stdout, stderr: stderr}
	for _, c := range clientCommands(e) {
		c.SilenceErrors, c.SilenceUsage = true, true
		root.AddCommand(c)
	}
	return root
}

func printVersion(stdout io.Writer, args []string) error {
	if len(args) > 0 && slices.Contains(helpFlags, args[0]) {
		fmt.Fprintln(stdout, "usage: connmgr version (or connmgr --version): print the version")
		return nil
	}
	if len(args) > 0 {
		return &usageError{fmt.Sprintf("version takes no arguments, got %q", args[0])}
	}
	fmt.Fprintln(stdout, "connmgr", buildVersion())
	return nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func isTerminal(f *os.File) bool { return isatty.IsTerminal(f.Fd()) }
