# cdc — make targets. `make demo` and `make test` are the two commands a
# newcomer needs; both install missing Debian packages (scripts/deps.sh) and
# start their own PostgreSQL and ClickHouse under .local/
# with scripts/localdb.sh and stop them again.
SHELL := /bin/bash
# Go from the go.dev tarball is in /usr/local/go/bin, often not on PATH;
# scripts/demo.sh and .ci/run add it, and so does this file for every
# target (test, lint, bench, ...), so they all use the same Go.
ifneq ($(wildcard /usr/local/go/bin/go),)
ifeq ($(filter /usr/local/go/bin,$(subst :, ,$(PATH))),)
export PATH := $(PATH):/usr/local/go/bin
endif
endif
GO ?= go
LOCAL := $(CURDIR)/.local

.PHONY: build test test-short lint bench demo clean

build:
	$(GO) build -ldflags "-X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o bin/cdc ./cmd/cdc

# One PostgreSQL and one ClickHouse for the whole suite; every test gets its
# own databases on them. Stopped again however the tests end. e2e runs on its
# own, after the rest: its fault tests stop and restart the shared servers.
# (It builds the binary with -race itself.)
test:
	@scripts/deps.sh test
	@-scripts/localdb.sh stop "$(LOCAL)/test" >/dev/null 2>&1 # left over from an interrupted run
	@rm -rf "$(LOCAL)/test" && mkdir -p "$(LOCAL)/test" && chmod 755 "$(LOCAL)" "$(LOCAL)/test"
	@set -euo pipefail; \
	trap 'scripts/localdb.sh stop "$(LOCAL)/test"' EXIT; \
	servers=$$(scripts/localdb.sh start "$(LOCAL)/test"); \
	eval "$$(sed 's/^/export /' <<<"$$servers")"; \
	export CDC_TEST_PG_DSN="$$CDC_PG_DSN" CDC_TEST_CLICKHOUSE_DSN="$$CDC_CLICKHOUSE_DSN" CDC_TEST_LOCALDB_DIR="$(LOCAL)/test"; \
	$(GO) vet ./...; \
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /e2e$$); \
	$(GO) test -count=1 -timeout 45m ./e2e/

# The main job end to end: local PostgreSQL and ClickHouse, migrate, run,
# publish, watch events and lag arrive, stop everything.
demo:
	scripts/demo.sh

# Fast checks without databases: the tests that need PostgreSQL and
# ClickHouse skip (testenv.Main), the rest run.
test-short:
	$(GO) test -short -count=1 ./...

# staticcheck is fetched through the Go module proxy on first use.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Throughput, latency and memory against real local PostgreSQL and
# ClickHouse (under .local/bench, stopped however it ends); prints one
# Markdown table and writes it to .local/bench/results.md. Not part of
# `make test` or CI. See docs/performance.md.
bench:
	@bash bench/run.sh

clean:
	rm -rf bin
	-scripts/localdb.sh stop "$(LOCAL)/test"
	-scripts/localdb.sh stop "$(LOCAL)/demo"
	rm -rf "$(LOCAL)"
