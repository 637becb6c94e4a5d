# Install artefacts: the kubectl bundle (dist/install.yaml), the Helm chart
# and the container image.
#
#   make build-installer   render config/default into dist/install.yaml
#   make chart-crds        copy the generated CRDs into the chart's crds/
#   make chart-rbac        copy the generated roles into the chart
#   make helm-lint         lint the chart with default and non-default values
#   make verify-install    regenerate everything above (make verify diffs it)
#   make docker-build      build the image (needs a Docker engine)

KUSTOMIZE := $(BIN)/kustomize
HELM := $(BIN)/helm

CHART := charts/friend-deletion-operator
# The release version lives in the chart's appVersion; the bundle's image tag
# and the chart's default image tag both come from it.
VERSION ?= $(shell awk '$$1 == "appVersion:" { gsub(/"/, "", $$2); print $$2; exit }' $(ROOT)/$(CHART)/Chart.yaml)
IMG ?= ghcr.io/imcallback/friend-deletion-operator:$(VERSION)
CONTAINER_TOOL ?= docker

##@ Install

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Build kustomize into bin/.

.PHONY: helm
helm: $(HELM) ## Build helm into bin/.

$(KUSTOMIZE): hack/tools/go.mod
	cd hack/tools && GOBIN=$(BIN) go install sigs.k8s.io/kustomize/kustomize/v5
	@touch $@

$(HELM): hack/tools/go.mod
	cd hack/tools && GOBIN=$(BIN) go install helm.sh/helm/v3/cmd/helm
	@touch $@

# The image is set in a throw-away overlay, so IMG=... never edits the
# committed config/manager/kustomization.yaml, which names the image
# $(MANAGER_IMAGE) at the chart's appVersion.
MANAGER_IMAGE := ghcr.io/imcallback/friend-deletion-operator
.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Render config/default into dist/install.yaml (IMG sets the image).
	@mkdir -p dist
	@overlay=$$(mktemp -d) && trap 'rm -rf "$$overlay"' EXIT && \
	cd "$$overlay" && \
	$(KUSTOMIZE) create --resources "$$(realpath --relative-to=. $(ROOT)/config/default)" && \
	$(KUSTOMIZE) edit set image "$(MANAGER_IMAGE)=$(IMG)" && \
	$(KUSTOMIZE) build . > $(ROOT)/dist/install.yaml
	@echo "wrote dist/install.yaml with image $(IMG)"

.PHONY: chart-crds
chart-crds: manifests ## Copy config/crd/bases into the chart's crds/ folder.
	rm -f $(CHART)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/crds/

.PHONY: chart-rbac
chart-rbac: manifests ## Copy the generated roles into the chart, which renders their rules.
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/rbac/receiver_role.yaml $(CHART)/files/receiver-role.yaml
	cp config/rbac/metrics_auth_role.yaml $(CHART)/files/metrics-auth-role.yaml

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the chart with its default values and with every option turned on.
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --values test/install/testdata/values-everything.yaml

.PHONY: helm-package
helm-package: $(HELM) chart-crds chart-rbac ## Package the chart into dist/.
	$(HELM) package $(CHART) --destination dist

.PHONY: verify-install
verify-install: build-installer chart-crds chart-rbac ## Regenerate the bundle and the chart's copies (make verify diffs them).

.PHONY: docker-build
docker-build: ## Build the manager image IMG (needs a Docker engine).
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the manager image IMG.
	$(CONTAINER_TOOL) push $(IMG)
