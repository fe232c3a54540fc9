# cdc container image: a static Go binary on distroless, running as non-root.
#
#   docker build -t cdc .
#   docker run --rm -e CDC_PG_DSN=... -e CDC_CLICKHOUSE_DSN=... cdc migrate
#   docker run -d -e CDC_PG_DSN=... -e CDC_CLICKHOUSE_DSN=... -p 9187:9187 cdc
#
# Works with the classic builder and BuildKit alike (no RUN --mount): the
# go.mod/go.sum layer caches the module download across source changes.

# The golang image pins GOTOOLCHAIN=local, so its Go must be at least the
# `go` line of go.mod: the default names that release exactly, so that an
# older cached 1.26 image cannot be picked up.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
# What `cdc version` and the start-up log line report:
#   docker build --build-arg VERSION=$(git describe --always --dirty) -t cdc .
ARG VERSION=dev
RUN go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/cdc ./cmd/cdc

# static-debian12 has CA certificates and tzdata but no shell, libc or package
# manager. :nonroot runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="cdc" \
      org.opencontainers.image.description="PostgreSQL outbox (pgoutput) to ClickHouse event_log connector"
COPY --from=build /out/cdc /cdc
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# /metrics, /healthz and /readyz (CDC_METRICS_ADDR, default :9187).
EXPOSE 9187
# No HEALTHCHECK: distroless has no shell, curl or wget to run one, and cdc
# has no health subcommand. Probe GET /healthz (liveness) on :9187 from the
# orchestrator (Kubernetes httpGet probes). /readyz is 503 on a standby: as a
# readiness probe it needs the Recreate strategy (docs/operations.md,
# "Deployment", Rollouts). In docker-compose.yml only Prometheus watches it (up{job="cdc"}).
ENTRYPOINT ["/cdc"]
CMD ["run"]
