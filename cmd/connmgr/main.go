// Command connmgr runs the connection manager.
//
//	connmgr [serve] [flags]   run the service (the default)
//	connmgr migrate [flags]   apply database migrations and exit
//	connmgr keys rotate       re-encrypt every stored secret under the first key
//	connmgr keys generate     print a new key for CONNMGR_ENCRYPTION_KEYS
//	connmgr version           print the version
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
	"syscall"

	"github.com/mattn/go-isatty"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "connmgr:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) error {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stderr)
	case "migrate":
		return migrate(ctx, args, getenv, stdout, stderr)
	case "keys":
		sub := ""
		if len(args) > 0 {
			sub, args = args[0], args[1:]
		}
		switch sub {
		case "rotate":
			return rotateKeys(ctx, args, getenv, stdout, stderr)
		case "generate":
			return generateKey(args, stdout, stderr)
		}
		return errors.New("usage: connmgr keys rotate|generate")
	case "version":
		fmt.Fprintln(stdout, "connmgr", buildVersion())
		return nil
	case "help": // "-h" and "--help" are flags of serve, which lists them
		fmt.Fprintln(stdout, "usage: connmgr [serve|migrate|keys rotate|keys generate|version] [flags]; connmgr serve -h lists the flags")
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, migrate, keys rotate, keys generate, version)", cmd)
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
