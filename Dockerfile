# syntax=docker/dockerfile:1
# connmgr: a static binary built in golang:1.26, run as a non-root user in
# alpine. docker-compose.yml runs it with PostgreSQL 16.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t connmgr .

# The builder runs on the build machine's platform and cross-compiles, so
# `docker buildx build --platform linux/arm64,linux/amd64` needs no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
# Modules first, so that a change to the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/connmgr ./cmd/connmgr

FROM alpine:3
ARG VERSION=dev
LABEL org.opencontainers.image.title="connmgr" \
      org.opencontainers.image.description="Named outbound connections with their credentials, token refresh and an invoke proxy" \
      org.opencontainers.image.version="${VERSION}"
# ca-certificates: token endpoints and targets are reached over TLS.
# A fixed UID/GID, so that volume ownership is the same on every host.
RUN apk add --no-cache ca-certificates \
    && addgroup -S -g 10001 connmgr \
    && adduser -S -D -H -h /data -s /sbin/nologin -u 10001 -G connmgr connmgr \
    && mkdir -p /data && chown 10001:10001 /data && chmod 0700 /data
COPY --from=build /out/connmgr /usr/local/bin/connmgr
# The data directory holds the SQLite database, and the generated key and
# admin token files when CONNMGR_ENCRYPTION_KEYS / CONNMGR_ADMIN_TOKEN are
# not set. With PostgreSQL and both variables set, nothing is written there.
ENV CONNMGR_ADDR=0.0.0.0:8080 \
    CONNMGR_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
USER 10001:10001
# /readyz answers 200 when the database answers. The check uses the port
# of CONNMGR_ADDR above; change both together.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD wget -qO- http://127.0.0.1:8080/readyz >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/connmgr"]
CMD ["serve"]
