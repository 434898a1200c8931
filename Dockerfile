# syntax=docker/dockerfile:1
#
# api-gateway: a static binary on an empty image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t api-gateway .
#   docker run --rm -p 8080:8080 api-gateway
#
# The binary carries its embedded default configuration (`api-gateway check
# -print` shows it). To use your own, mount it and name it with
# GATEWAY_CONFIG; mount the directory, not the file, so that hot_reload sees
# editors' renames and Kubernetes ConfigMap updates:
#
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/configs:/etc/api-gateway:ro" \
#     -e GATEWAY_CONFIG=/etc/api-gateway/config.yaml \
#     -e JWT_SECRET="$(openssl rand -hex 32)" \
#     api-gateway
#
# The admin listener (9090) binds 127.0.0.1 unless the configuration sets
# admin.host: "0.0.0.0"; publishing 9090 is useful only then.
# cmd/api-gateway/container_test.go runs this image's contents (the binary
# and the CA bundle, nothing else) in an empty chroot as 65534:65534.

# The build stage runs on the builder's own platform and cross-compiles,
# which is fast for multi-platform builds (docker buildx --platform ...).
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
# CGO_ENABLED=0: no libc, so the binary runs on scratch. -trimpath keeps
# build paths out of the binary; -s -w drop symbol tables and DWARF.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/api-gateway ./cmd/api-gateway

FROM scratch
# Root certificates for https upstreams, JWKS and rediss:// URLs.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/api-gateway /api-gateway
# nobody:nogroup; nothing in the image needs more, and Kubernetes'
# runAsNonRoot can verify a numeric user.
USER 65534:65534
# 8080: server.port (env PORT). 9090: admin.port (env ADMIN_PORT).
EXPOSE 8080 9090
# SIGTERM drains: /ready turns 503, after server.shutdown_delay (5s) the
# listener closes, in-flight requests get server.shutdown_timeout (30s).
# Give `docker stop -t` (or terminationGracePeriodSeconds) more than both.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/api-gateway"]
