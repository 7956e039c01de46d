# meterr-operator. `make help` lists the targets.

IMG ?= meterr-operator:dev
# Stamped into the binary (`meterr-operator version`, meterr_build_info) and,
# by `make release`, into the image tag of dist/install.yaml and the chart.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS ?= -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# How the binary is built, by `make build` and by `make image` for each
# other platform. Static, since the image has no libc (CGO_ENABLED=0: net's
# resolver and os/user in pure Go); without local paths, so one commit gives
# the same bytes in any checkout; without the symbol table and DWARF (-s -w
# in LDFLAGS), which halves the image.
GO_BUILD = CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
K8S_VERSION ?= 1.37.2
LOCALBIN ?= $(CURDIR)/bin
# Where the control plane binaries (etcd, kube-apiserver, kubectl) live. Point
# it at existing envtest binaries to skip building them.
KUBEBUILDER_ASSETS ?= $(LOCALBIN)/k8s/$(K8S_VERSION)
export KUBEBUILDER_ASSETS
KUBECTL ?= $(KUBEBUILDER_ASSETS)/kubectl
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
HELM ?= $(LOCALBIN)/helm
PROMTOOL ?= $(LOCALBIN)/promtool
export HELM
# The image `make release` pins in dist/install.yaml and the chart's values.
IMAGE_REPOSITORY ?= meterr-operator
# `make image`: the image built without Docker by bin/mkimage (hack/image),
# as one tarball that is an OCI image layout and a docker-archive at once,
# tagged IMG. PLATFORMS (os/arch, comma-separated) makes a multi-platform
# index; the host's platform packs bin/meterr-operator and
# bin/meterr-auth-server themselves, the others are cross-compiled into
# bin/OS_ARCH/.
IMAGE_ARCHIVE ?= dist/meterr-operator-image.tar
PLATFORMS ?= linux/amd64
# The CA bundle the image carries: Debian's ca-certificates package.
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
# Every timestamp in the image: the commit's time, so a commit's image has
# one digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
MKIMAGE ?= $(LOCALBIN)/mkimage
# The image's labels; the Dockerfile's final stage carries the same
# (hack/image/make_test.go holds the two together).
IMAGE_TITLE := meterr-operator
IMAGE_DESCRIPTION := Declarative meterr API keys for Kubernetes: operator and auth server
IMAGE_SOURCE := https://github.com/meterr/meterr-operator
comma := ,
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
# gitleaks runs the published scanner rule (docs/secretscanning_test.go).
GITLEAKS ?= $(LOCALBIN)/gitleaks
export GITLEAKS
GO_TEST_FLAGS ?= -count=1
# The revision whose binaries `make bench` measures beside the current ones
# (the report's before); empty for none. 2a397c1 is the last commit before the
# package redesign.
BENCH_BASE ?= 2a397c1
# More hack/bench.sh options, e.g. BENCH_FLAGS="--compare 6 -- -fleet-base".
BENCH_FLAGS ?=
# How long each fuzz target runs inside `make test`; `make fuzz FUZZTIME=5m` for longer.
FUZZTIME ?= 5s

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the RBAC roles.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=meterr-manager paths="./controllers/..." output:rbac:artifacts:config=config/rbac/manager
	$(CONTROLLER_GEN) rbac:roleName=meterr-auth-server paths="./webhookserver/..." output:rbac:artifacts:config=config/rbac/auth-server

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail when `make manifests generate` would change committed files.
	hack/verify-generated.sh

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: envtest-assets
envtest-assets: ## Build etcd, kube-apiserver and kubectl from Go modules into bin/k8s/<version> (once).
	@if [ -x "$(KUBEBUILDER_ASSETS)/kube-apiserver" ] && [ -x "$(KUBEBUILDER_ASSETS)/etcd" ] && [ -x "$(KUBEBUILDER_ASSETS)/kubectl" ]; then \
		echo "envtest-assets: using $(KUBEBUILDER_ASSETS)"; \
	else ENVTEST_ASSETS_DIR="$(KUBEBUILDER_ASSETS)" K8S_VERSION=$(K8S_VERSION) hack/envtest-assets.sh; fi

.PHONY: test
test: verify-generated vet $(GOLANGCI_LINT) $(HELM) $(GITLEAKS) $(PROMTOOL) envtest-assets build ## Run every test: lint, unit, envtest, chart, install, fuzz smoke, bench smoke, e2e.
	hack/test.sh

.PHONY: test-unit
test-unit: ## Unit tests only (no control plane).
	go test $(GO_TEST_FLAGS) ./cmd/... ./internal/... ./webhookserver/... ./pkg/... ./docs/...

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each.
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

##@ Build

# The image's binaries: meterr-operator (every command) and meterr-auth-server
# (the auth server alone, cmd/meterr-auth-server, which the Deployments run:
# it maps a third of the pages; docs/architecture.md, "Memory of the auth
# server"). One go build, so that the two links run side by side.
BINARIES := meterr-operator meterr-auth-server

.PHONY: build
build: ## Build bin/meterr-operator and bin/meterr-auth-server (static, as the image carries them).
	$(GO_BUILD) -o $(LOCALBIN)/ . ./cmd/meterr-auth-server

.PHONY: image
image: build $(MKIMAGE) ## Build the image without Docker: IMAGE_ARCHIVE (dist/meterr-operator-image.tar), tagged IMG; PLATFORMS=linux/amd64,linux/arm64 for several.
	@host="$$(go env GOOS)/$$(go env GOARCH)"; args=(); \
	for p in $(subst $(comma), ,$(PLATFORMS)); do \
	  dir="$(LOCALBIN)"; \
	  if [ "$$p" != "$$host" ]; then \
	    dir="$(LOCALBIN)/$${p//\//_}"; \
	    echo "image: building $$dir/"; \
	    mkdir -p "$$dir"; \
	    GOOS="$${p%%/*}" GOARCH="$${p#*/}" $(GO_BUILD) -o "$$dir/" . ./cmd/meterr-auth-server; \
	  fi; \
	  args+=(--platform "$$p"); \
	  for b in $(BINARIES); do args+=(--binary "$$p=$$dir/$$b:/$$b"); done; \
	done; \
	SOURCE_DATE_EPOCH="$(SOURCE_DATE_EPOCH)" "$(MKIMAGE)" --out "$(IMAGE_ARCHIVE)" --tag "$(IMG)" "$${args[@]}" \
	  --entrypoint /meterr-operator --user 65532:65532 --ca-bundle "$(CA_BUNDLE)" \
	  --label "org.opencontainers.image.title=$(IMAGE_TITLE)" \
	  --label "org.opencontainers.image.description=$(IMAGE_DESCRIPTION)" \
	  --label "org.opencontainers.image.source=$(IMAGE_SOURCE)" \
	  --label "org.opencontainers.image.version=$(VERSION)" \
	  --label "org.opencontainers.image.revision=$(COMMIT)"

.PHONY: run
run: build ## Run the manager against the cluster in KUBECONFIG.
	$(LOCALBIN)/meterr-operator manager

.PHONY: demo
demo: envtest-assets build ## Run the whole system on a local control plane and show it working.
	$(LOCALBIN)/meterr-operator dev --assets-dir "$(KUBEBUILDER_ASSETS)"

.PHONY: bench
bench: envtest-assets build ## Benchmarks: Go benchmarks and load tests of the binary, before (BENCH_BASE) and after; writes docs/benchmarks.md.
	BENCH_BASE=$(BENCH_BASE) hack/bench.sh $(BENCH_FLAGS)

.PHONY: bench-compare
bench-compare: ## Go benchmarks of the hot path at BASE (a git revision) and now, interleaved, through benchstat.
	hack/bench-compare.sh $(BASE) $(or $(COUNT),6)

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint and render the Helm chart with the default values and with every optional value on.
	$(HELM) lint --strict charts/meterr-operator
	$(HELM) lint --strict charts/meterr-operator -f charts/meterr-operator/ci/all-on-values.yaml
	$(HELM) template meterr charts/meterr-operator >/dev/null
	$(HELM) template meterr charts/meterr-operator -f charts/meterr-operator/ci/all-on-values.yaml >/dev/null

.PHONY: release
release: $(HELM) envtest-assets $(MKIMAGE) ## Write dist/install.yaml, the packaged chart and the image tarball for VERSION (make release VERSION=v0.1.0 IMAGE_REPOSITORY=...).
	IMAGE_REPOSITORY=$(IMAGE_REPOSITORY) KUBECTL=$(KUBECTL) MKIMAGE=$(MKIMAGE) hack/release.sh $(VERSION) dist

.PHONY: docker-build
docker-build: ## Build the image with a Docker engine instead: the same binary (make build), user, entrypoint and labels as `make image`.
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) .

##@ Deployment

.PHONY: install
install: manifests ## Install the CRD into the cluster in KUBECONFIG.
	$(KUBECTL) apply --server-side -k config/crd

.PHONY: uninstall
uninstall: ## Remove the CRD (and with it every MeterrAPIKey).
	$(KUBECTL) delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: manifests ## Deploy the operator with image IMG.
	cd config/manager && $(KUBECTL) kustomize . >/dev/null
	$(KUBECTL) kustomize config/default | sed 's|image: meterr-operator:dev|image: $(IMG)|' | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: ## Remove the operator.
	$(KUBECTL) kustomize config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Local cluster

# Where a running cluster keeps everything it writes; deleted by cluster-down.
CLUSTER_STATE ?= /var/lib/meterr-cluster
export CLUSTER_STATE

.PHONY: cluster-build
cluster-build: envtest-assets ## Build the local cluster's binaries and images into bin/ (once; cold, about 20-30 minutes on 2 cores).
	LOCALBIN=$(LOCALBIN) K8S_VERSION=$(K8S_VERSION) hack/cluster/build.sh

.PHONY: cluster
cluster: cluster-build ## Bring up a one-node Kubernetes cluster on this machine (root); prints its kubeconfig.
	LOCALBIN=$(LOCALBIN) K8S_VERSION=$(K8S_VERSION) hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Tear the local cluster down, leaving the host as it was (also after a crash).
	LOCALBIN=$(LOCALBIN) K8S_VERSION=$(K8S_VERSION) hack/cluster/down.sh

.PHONY: test-cluster
test-cluster: envtest-assets ## Bring the local cluster up, run test/cluster against it, tear it down.
	LOCALBIN=$(LOCALBIN) K8S_VERSION=$(K8S_VERSION) hack/cluster/test.sh

.PHONY: test-cluster-teardown
test-cluster-teardown: cluster-build ## Prove that cluster-down leaves no mount, link, rule, cgroup, sysctl or process behind.
	LOCALBIN=$(LOCALBIN) K8S_VERSION=$(K8S_VERSION) hack/cluster/teardown-test.sh

##@ Tools

$(CONTROLLER_GEN): hack/tools/go.mod
	cd hack/tools && go build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: helm
helm: $(HELM) ## Build helm from Go modules into bin/helm (once; a few minutes).

$(HELM): hack/helm/go.mod
	HELM=$(HELM) hack/helm.sh

.PHONY: promtool
promtool: $(PROMTOOL) ## Build promtool from Go modules (hack/promtool pins it) into bin/promtool, for test/install's rule checks.

$(PROMTOOL): hack/promtool/go.mod
	cd hack/promtool && CGO_ENABLED=0 go build -trimpath -o $(PROMTOOL) github.com/prometheus/prometheus/cmd/promtool

# mkimage (`make image`) is rebuilt only when hack/image changes.
$(MKIMAGE): hack/image/go.mod hack/image/go.sum $(filter-out %_test.go,$(wildcard hack/image/*.go))
	cd hack/image && CGO_ENABLED=0 go build -trimpath -o "$(MKIMAGE)" .

.PHONY: gitleaks
gitleaks: $(GITLEAKS) ## Build gitleaks (pinned in hack/gitleaks) into bin/gitleaks.

$(GITLEAKS): hack/gitleaks/go.mod
	cd hack/gitleaks && go build -o $(GITLEAKS) -ldflags "-X github.com/zricethezav/gitleaks/v8/version.Version=v8.30.1" github.com/zricethezav/gitleaks/v8

$(GOLANGCI_LINT): hack/tools/go.mod
	cd hack/tools && go build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint
