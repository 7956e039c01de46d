# syntax=docker/dockerfile:1
# The meterr-operator image for those with Docker: the static binary
# meterr-operator (the entrypoint, with the subcommands manager, auth-server
# and dev) and meterr-auth-server (the auth server alone, which the
# Deployments run: it maps a third of the pages), on a distroless base (no
# shell, no package manager), running as the unprivileged user 65532.
#
#   make docker-build IMG=registry.example.com/meterr-operator:v0.1.0
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
#
# `make image` builds the same image without Docker (hack/image). The two
# share what can be shared: the binaries come from `make build` here too (the
# Makefile's GO_BUILD is the one definition of the build), and the user,
# entrypoint and labels below are the ones `make image` gives mkimage. What
# cannot be shared is the base: here it is distroless static:nonroot, there
# mkimage writes the same facts itself (65532 "nonroot" in /etc/passwd and
# /etc/group, its home /home/nonroot as the working directory, /tmp 1777,
# the CA bundle at /etc/ssl/certs/ca-certificates.crt, PATH and
# SSL_CERT_FILE). hack/image/make_test.go fails when they drift apart.

# The builder runs on the build machine's platform and cross-compiles, which
# is much faster than building under emulation for other architectures.
FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
# `meterr-operator version` and meterr_build_info; `make docker-build` passes
# git describe --tags --always --dirty and git rev-parse HEAD.
ARG VERSION=dev
ARG COMMIT=

WORKDIR /workspace

# Modules first, in their own layer, so a source change does not download
# them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    make build LOCALBIN=/out VERSION="${VERSION}" COMMIT="${COMMIT}"

FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
ARG COMMIT=
LABEL org.opencontainers.image.title="meterr-operator" \
      org.opencontainers.image.description="Declarative meterr API keys for Kubernetes: operator and auth server" \
      org.opencontainers.image.source="https://github.com/meterr/meterr-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=builder /out/meterr-operator /meterr-operator
COPY --from=builder /out/meterr-auth-server /meterr-auth-server
USER 65532:65532
ENTRYPOINT ["/meterr-operator"]
