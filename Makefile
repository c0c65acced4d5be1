# connmgr: make test runs everything the CI runs; make bench and make load measure.
SHELL := /bin/bash
GO ?= go

# Tests that need PostgreSQL read CONNMGR_TEST_DATABASE_URL; when it is not
# set and a server answers on 127.0.0.1:5432, use it.
ifeq ($(CONNMGR_TEST_DATABASE_URL),)
ifneq ($(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && echo yes),)
export CONNMGR_TEST_DATABASE_URL := postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
endif
endif

.PHONY: all build run test lint lint-spec generate fuzz bench sidebyside load interop scale clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/connmgr ./cmd/connmgr

run:
	$(GO) run ./cmd/connmgr

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# clients/ holds the npm packages that lint the contract and build the
# TypeScript client, pinned by its package-lock.json: installed with npm ci
# when node_modules is missing or older than the lock file.
CLIENTS_NPM := clients/node_modules/.package-lock.json
$(CLIENTS_NPM): clients/package.json clients/package-lock.json
	cd clients && npm ci
	@touch $@

# Redocly (recommended-strict) and Spectral (spectral:oas, any severity
# fails) on openapi.yaml; see clients/redocly.yaml and clients/.spectral.yaml.
lint-spec: $(CLIENTS_NPM)
	cd clients && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true node_modules/.bin/redocly lint --format=stylish
	cd clients && node_modules/.bin/spectral lint --ruleset .spectral.yaml --fail-severity=hint ../openapi.yaml

# The Go client generated from openapi.yaml (committed; a test fails while
# it is stale).
generate:
	$(GO) generate ./clients/goclient

# CONNMGR_REQUIRE_NODE: the TypeScript round trip (clients/) fails instead
# of skipping when clients/node_modules is missing.
test: lint lint-spec
	@if [ -z "$$CONNMGR_TEST_DATABASE_URL" ]; then echo "note: no PostgreSQL on 127.0.0.1:5432 and CONNMGR_TEST_DATABASE_URL unset: PostgreSQL cases will be skipped"; fi
	CONNMGR_REQUIRE_NODE=1 $(GO) test -race -timeout 15m ./...

# Short runs of every fuzz target (go test runs their seed corpora already).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzResolve -fuzztime 30s ./invoke/
	$(GO) test -run '^$$' -fuzz FuzzCreateBody -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzRetryAfter -fuzztime 30s ./alerts/

# Full invoke path against a bare httputil.ReverseProxy on the same upstream:
# throughput with 8 callers in a closed loop (saturated), latency at a fixed
# 2000 req/s in an open loop (wrk2-style). Medians of BENCH_COUNT runs and
# their ratios. Run it on an idle machine.
BENCH_COUNT ?= 5
BENCH_TIME ?= 3s
bench:
	@$(GO) test -run '^$$' -bench BenchmarkInvoke -benchtime $(BENCH_TIME) -count $(BENCH_COUNT) ./invoke/ | tee /tmp/connmgr-bench.txt
	@awk '/^BenchmarkInvoke\// { split($$1, n, "/"); k = n[2]; sub(/-[0-9]+$$/, "", k); \
		ns[k] = ns[k] " " $$3; p50[k] = p50[k] " " $$5; p99[k] = p99[k] " " $$7 } \
		function median(list,   a, c, i, j, t) { c = split(list, a, " "); \
			for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t } \
			return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2 } \
		END { b = median(ns["bare"]); c = median(ns["connmgr"]); \
			printf "\nmedians of %d runs    saturated req/s (p99 µs)   at 2000 req/s: p50 µs   p99 µs\n", $(BENCH_COUNT); \
			printf "bare ReverseProxy     %8.0f (%6.0f)              %8.0f %8.0f\n", 1e9 / b, median(p99["bare"]), median(p50["bare-paced"]), median(p99["bare-paced"]); \
			printf "connmgr               %8.0f (%6.0f)              %8.0f %8.0f\n", 1e9 / c, median(p99["connmgr"]), median(p50["connmgr-paced"]), median(p99["connmgr-paced"]); \
			printf "connmgr / bare: throughput %.2fx (target >= 0.90), p99 at 2000 req/s %.2fx (target <= 1.20), saturated p99 %.2fx\n", \
				b / c, median(p99["connmgr-paced"]) / median(p99["bare-paced"]), median(p99["connmgr"]) / median(p99["bare"]) }' /tmp/connmgr-bench.txt

# wrk against a built connmgr, a bare httputil.ReverseProxy and Caddy,
# separate processes, the same upstream: rounds in turn, medians and ratios.
# Needs wrk and caddy (installed when run as root). Not part of make test.
sidebyside:
	./bench/sidebyside.sh

# Steady load against a built connmgr for LOAD_TIME; errors must be 0 and
# RSS and goroutines flat. Not part of make test.
LOAD_TIME ?= 30s
LOAD_CONCURRENCY ?= 32
load:
	$(GO) run ./cmd/connmgr-load -duration $(LOAD_TIME) -concurrency $(LOAD_CONCURRENCY)

# connmgr, built from the tree, against real authorization servers (glewlwyd
# from Debian's packages, provisioned by interop/glewlwyd.sh) through its
# public API only; a table of cases at the end. See interop/README.md.
# Installs missing packages when run as root. Not part of make test.
interop:
	./interop/run.sh

# connmgr at scale on PostgreSQL: list pages over SCALE_CONNECTIONS
# connections (target: p99 under 20 ms) and SCALE_OAUTH 60 s tokens kept
# fresh by SCALE_REPLICAS replicas for SCALE_TIME without traffic (targets:
# none late, one refresh per cycle, busiest second at most twice the
# average). Not part of make test; needs PostgreSQL (CONNMGR_TEST_DATABASE_URL).
SCALE_CONNECTIONS ?= 100000
SCALE_OAUTH ?= 10000
SCALE_REPLICAS ?= 3
SCALE_TIME ?= 5m
scale:
	$(GO) run ./cmd/connmgr-scale -connections $(SCALE_CONNECTIONS) -oauth $(SCALE_OAUTH) -replicas $(SCALE_REPLICAS) -duration $(SCALE_TIME)

clean:
	rm -rf bin data clients/node_modules clients/ts/gen clients/ts/dist
