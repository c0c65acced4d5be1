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

clean:
	rm -rf bin data
