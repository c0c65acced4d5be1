// Package devproc builds and starts connmgr processes for the measuring
// commands (connmgr-load, connmgr-scale): a binary built from the tree,
// run with none of the caller's CONNMGR_* settings, whose log says where
// it listens.
package devproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Build builds ./cmd/connmgr into dir and returns the binary's path. It
// runs from the repository root.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "connmgr")
	build := exec.Command("go", "build", "-o", bin, "./cmd/connmgr")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build connmgr (run from the repository root): %w", err)
	}
	return bin, nil
}

// Start starts bin with env and the caller's environment without its
// CONNMGR_* settings (a CONNMGR_DATABASE_URL above all must not point the
// measured process at a real database), and returns it once its log says
// where it listens, with that address. The log's warnings and errors go
// to stderr. The caller stops the process.
func Start(ctx context.Context, bin string, env ...string) (*exec.Cmd, string, error) {
	cmd := exec.CommandContext(ctx, bin)
	environ := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CONNMGR_") })
	cmd.Env = append(environ, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	addr, err := listenAddr(stderr)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, "", err
	}
	return cmd, addr, nil
}

// listenAddr reads connmgr's log until it says where it listens; the rest
// of the log goes on being read, and echoed when it is a warning or worse.
func listenAddr(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "connmgr listening" {
			go func() {
				for sc.Scan() {
					warnings(sc.Bytes())
				}
			}()
			return line.Addr, nil
		}
		warnings(sc.Bytes())
	}
	return "", errors.New("connmgr exited before listening")
}

// warnings echoes a log line of warning level or worse.
func warnings(b []byte) {
	var line struct{ Level string }
	if json.Unmarshal(b, &line) != nil || line.Level == "WARN" || line.Level == "ERROR" {
		fmt.Fprintln(os.Stderr, "connmgr:", string(b))
	}
}
