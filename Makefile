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

.PHONY: all build run test lint fuzz bench load clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/connmgr ./cmd/connmgr

run:
	$(GO) run ./cmd/connmgr

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: lint
	@if [ -z "$$CONNMGR_TEST_DATABASE_URL" ]; then echo "note: no PostgreSQL on 127.0.0.1:5432 and CONNMGR_TEST_DATABASE_URL unset: PostgreSQL cases will be skipped"; fi
	$(GO) test -race -timeout 15m ./...

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

# Steady load against a built connmgr for LOAD_TIME; errors must be 0 and
# RSS and goroutines flat. Not part of make test.
LOAD_TIME ?= 30s
LOAD_CONCURRENCY ?= 32
load:
	$(GO) run ./cmd/connmgr-load -duration $(LOAD_TIME) -concurrency $(LOAD_CONCURRENCY)

clean:
	rm -rf bin data
