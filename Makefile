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

# The whole suite against one PostgreSQL and one ClickHouse under .local/test,
# started and stopped again by scripts/test.sh however the tests end.
test:
	@GO="$(GO)" scripts/test.sh

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
	-scripts/localdb.sh stop "$(LOCAL)/bench"
	-scripts/localdb.sh stop "$(LOCAL)/dev"
	rm -rf "$(LOCAL)"
