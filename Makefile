# friend-deletion-operator
#
#   make run       run the operator (brings up a local cluster when no
#                  cluster is reachable)
#   make test      every suite CI runs: unit and envtest against a real
#                  kube-apiserver, the example modules under
#                  controllers/examples, a bounded fuzz run, end to end on a
#                  local cluster (make test-unit runs only the first)
#   make verify    regenerate everything and fail on any difference
#
# Tool versions live in hack/tools/go.mod and hack/controlplane/go.mod.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BIN := $(ROOT)/bin

# Kubernetes version of the control plane the tests and the local cluster
# run, read from the pinned tools module.
K8S_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2; exit }' $(ROOT)/hack/controlplane/go.mod)
# Control-plane binaries are cached per user, outside the clone, keyed by
# version. Override with K8S_ASSETS=/some/dir.
XDG_DATA_HOME ?= $(HOME)/.local/share
K8S_ASSETS ?= $(XDG_DATA_HOME)/friend-deletion-operator/k8s/$(K8S_VERSION)
export K8S_ASSETS

CONTROLLER_GEN := $(BIN)/controller-gen
GO_TEST_FLAGS ?=
# A count, not a duration: Go's fuzz coordinator can report a bare
# "context deadline exceeded" when a wall-clock -fuzztime ends under CPU
# contention (golang/go#75804, fixed after Go 1.26). A count has no deadline.
FUZZTIME ?= 10000x

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
# Each role is generated from the +kubebuilder:rbac markers of the code that
# runs with it (controller-gen makes one role per run): the controllers'
# (config/rbac/role.yaml), the callback receiver's, and the one both need to
# check who scrapes their metrics.
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC roles.
	$(CONTROLLER_GEN) crd:generateEmbeddedObjectMeta=true paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./controllers/... output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=receiver-role paths=./webhook/... output:rbac:stdout > config/rbac/receiver_role.yaml
	$(CONTROLLER_GEN) rbac:roleName=metrics-auth-role paths=./internal/metricsauth/... output:rbac:stdout > config/rbac/metrics_auth_role.yaml
	go run ./hack/crdtrim config/crd/bases/sns.imcallback.io_callbackconfigs.yaml spec.cleanup.job.spec

.PHONY: fmt
fmt:
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet:
	go vet ./...

.PHONY: tidy
tidy: tidy-examples
	go mod tidy
	cd hack/tools && go mod tidy
	cd hack/controlplane && go mod tidy

.PHONY: verify
verify: generate manifests verify-install tidy fmt vet ## Regenerate and tidy; fail on any diff.
	@if [ -n "$$(git status --porcelain --untracked-files=all -- . ':!bin')" ]; then \
		echo "make verify: generated, tidied or formatted files differ from what is committed:"; \
		git status --porcelain --untracked-files=all -- . ':!bin'; \
		git --no-pager diff --stat; \
		exit 1; \
	fi
	@echo "make verify: clean"

.PHONY: control-plane
control-plane: ## Build kube-apiserver, etcd and the local-cluster binaries into K8S_ASSETS.
	hack/build-control-plane.sh

.PHONY: envtest-assets
envtest-assets:
	hack/build-control-plane.sh kube-apiserver etcd kubectl

.PHONY: test
test: test-unit test-examples fuzz test-e2e ## Run every suite CI runs: unit and envtest, the example modules, a bounded fuzz run, end to end.

.PHONY: test-unit
test-unit: envtest-assets kustomize helm ## Run the unit and envtest suites (go test ./...).
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go test $(GO_TEST_FLAGS) ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (a count of inputs, or a duration).
	@for pkg in $$(go list ./...); do \
		for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f for $(FUZZTIME)"; \
			go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

##@ Build

.PHONY: build
build: ## Build the manager binary, stamped with VERSION and COMMIT.
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/manager .

$(CONTROLLER_GEN): hack/tools/go.mod
	cd hack/tools && GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen
	@touch $@

.PHONY: help
help:
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# Each area of the project keeps its own targets in hack/mk/<area>.mk.
-include $(wildcard hack/mk/*.mk)
