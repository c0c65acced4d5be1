//go:build interop

// Package interop runs connmgr, as a built process and only through its
// public HTTP API, against real authorization servers it did not write.
// interop/run.sh (make interop) provisions them, starts connmgr and runs
// these tests with INTEROP_ENV naming the file of facts they need; go test
// ./... never builds them (build tag interop).
package interop

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// env holds INTEROP_ENV's KEY=VALUE lines: URLs, paths and the throw-away
// secrets of the provisioned clients.
var env map[string]string

func TestMain(m *testing.M) {
	path := os.Getenv("INTEROP_ENV")
	if path == "" {
		fmt.Fprintln(os.Stderr, "interop: INTEROP_ENV is not set; run `make interop`, which provisions the servers and sets it")
		os.Exit(2)
	}
	var err error
	if env, err = readEnv(path); err != nil {
		fmt.Fprintf(os.Stderr, "interop: %v\n", err)
		os.Exit(2)
	}
	code := m.Run()
	printTable()
	os.Exit(code)
}

// readEnv reads a file of KEY=VALUE lines.
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read INTEROP_ENV: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: line %q is not KEY=VALUE", path, line)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// need returns env[key] or stops the test: the provisioning did not
// provide what the test needs.
func need(t testing.TB, key string) string {
	t.Helper()
	v := env[key]
	if v == "" {
		t.Fatalf("fixture: INTEROP_ENV has no %s", key)
	}
	return v
}

// row is one line of the result table.
type row struct {
	id, expected, observed string
	pass                   bool
}

var (
	rowsMu sync.Mutex
	rows   []row
)

// observation collects what a case saw; any failed check fails the case.
type observation struct {
	parts  []string
	failed bool
}

// see records a fact.
func (o *observation) see(format string, args ...any) {
	o.parts = append(o.parts, fmt.Sprintf(format, args...))
}

// fail records a fact that contradicts the expectation.
func (o *observation) fail(format string, args ...any) {
	o.failed = true
	o.parts = append(o.parts, "✗ "+fmt.Sprintf(format, args...))
}

// check records cond's outcome: the fact, marked when it is a failure.
func (o *observation) check(cond bool, format string, args ...any) bool {
	if cond {
		o.see(format, args...)
	} else {
		o.fail(format, args...)
	}
	return cond
}

// runCase runs one case as a subtest and records its row. It reports
// whether the case passed.
func runCase(t *testing.T, id, expected string, fn func(t *testing.T, o *observation)) bool {
	return t.Run(id, func(t *testing.T) {
		o := &observation{}
		fn(t, o)
		if t.Failed() && !o.failed {
			o.fail("the case stopped early (see the test log)")
		}
		r := row{id: id, expected: expected, observed: strings.Join(o.parts, "; "), pass: !o.failed}
		rowsMu.Lock()
		rows = append(rows, r)
		rowsMu.Unlock()
		if o.failed {
			t.Errorf("%s\n  expected: %s\n  observed: %s", id, expected, r.observed)
		} else {
			t.Logf("%s: %s", id, r.observed)
		}
	})
}

var caseNumber = regexp.MustCompile(`^(\d+)([a-z]*)`)

// printTable prints the rows in case order as a Markdown table.
func printTable() {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := caseNumber.FindStringSubmatch(rows[i].id), caseNumber.FindStringSubmatch(rows[j].id)
		if a == nil || b == nil {
			return rows[i].id < rows[j].id
		}
		if len(a[1]) != len(b[1]) {
			return len(a[1]) < len(b[1])
		}
		if a[1] != b[1] {
			return a[1] < b[1]
		}
		return a[2] < b[2]
	})
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	passed := 0
	fmt.Println()
	fmt.Println("| case | expected | observed | result |")
	fmt.Println("|---|---|---|---|")
	for _, r := range rows {
		result := "FAIL"
		if r.pass {
			result, passed = "PASS", passed+1
		}
		fmt.Printf("| %s | %s | %s | %s |\n", cell(r.id), cell(r.expected), cell(r.observed), result)
	}
	fmt.Printf("\ninterop: %d passed, %d failed\n", passed, len(rows)-passed)
}
