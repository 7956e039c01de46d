# syntax=docker/dockerfile:1
# The meterr-operator image: one static binary with the subcommands manager,
# auth-server and dev, on a distroless base (no shell, no package manager),
# running as the unprivileged user 65532.
#
#   make docker-build IMG=registry.example.com/meterr-operator:v0.1.0
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .

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
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /meterr-operator .

FROM gcr.io/distroless/static:nonroot
LABEL org.opencontainers.image.title="meterr-operator" \
      org.opencontainers.image.description="Declarative meterr API keys for Kubernetes: operator and auth server" \
      org.opencontainers.image.source="https://github.com/meterr/meterr-operator"
COPY --from=builder /meterr-operator /meterr-operator
USER 65532:65532
ENTRYPOINT ["/meterr-operator"]
