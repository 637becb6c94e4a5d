# Install artefacts: the kubectl bundle (dist/install.yaml), the Helm chart
# and the container image.
#
#   make build-installer   render config/default into dist/install.yaml
#   make chart-crds        copy the generated CRDs into the chart's crds/
#   make chart-rbac        copy the generated roles into the chart
#   make helm-lint         lint the chart with default and non-default values
#   make verify-install    regenerate everything above (make verify diffs it)
#   make release           the release's artefacts in dist/: install.yaml with
#                          the image IMG pinned by tag, and the chart archive
#                          for VERSION whose default image is IMG too
#   make docker-build      build the image (needs a Docker engine)

KUSTOMIZE := $(BIN)/kustomize
HELM := $(BIN)/helm

CHART := charts/friend-deletion-operator
# The release version lives in the chart's appVersion; the bundle's image tag
# and the chart's default image tag both come from it.
VERSION ?= $(shell awk '$$1 == "appVersion:" { gsub(/"/, "", $$2); print $$2; exit }' $(ROOT)/$(CHART)/Chart.yaml)
IMG ?= ghcr.io/imcallback/friend-deletion-operator:$(VERSION)
CONTAINER_TOOL ?= docker
# COMMIT is the source commit stamped into the binary and the image's labels.
COMMIT ?= $(shell git -C $(ROOT) rev-parse HEAD 2>/dev/null)
# LDFLAGS stamp VERSION and COMMIT into internal/version (`manager --version`);
# the Dockerfile passes the same flags.
VERSION_PKG := github.com/imcallback/friend-deletion-operator/internal/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT)
# DIST is where `make release` writes its artefacts.
DIST ?= $(ROOT)/dist

##@ Install

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Build kustomize into bin/.

.PHONY: helm
helm: $(HELM) ## Build helm into bin/.

$(KUSTOMIZE): hack/tools/go.mod
	cd hack/tools && GOBIN=$(BIN) go install sigs.k8s.io/kustomize/kustomize/v5
	@touch $@

# Helm's own release build stamps the Kubernetes version of its client-go as
# the one `helm template` and `helm lint` assume; a plain go install leaves
# 1.20, older than the chart's kubeVersion. Stamp it the same way.
HELM_K8S_MINOR = $(word 2,$(subst ., ,$(shell cd $(ROOT)/hack/tools && go list -f '{{.Version}}' -m k8s.io/client-go)))
HELM_LDFLAGS = $(foreach pkg,pkg/chartutil pkg/lint/rules,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=1 -X helm.sh/helm/v3/$(pkg).k8sVersionMinor=$(HELM_K8S_MINOR))
$(HELM): hack/tools/go.mod hack/mk/install.mk
	cd hack/tools && GOBIN=$(BIN) go install -ldflags "$(HELM_LDFLAGS)" helm.sh/helm/v3/cmd/helm
	@touch $@

# The image is set in a throw-away overlay, so IMG=... never edits the
# committed config/manager/kustomization.yaml, which names the image
# $(MANAGER_IMAGE) at the chart's appVersion.
MANAGER_IMAGE := ghcr.io/imcallback/friend-deletion-operator
.PHONY: build-installer
# render-installer renders config/default with image IMG into the file $(1).
define render-installer
	@mkdir -p $(dir $(1))
	@overlay=$$(mktemp -d) && trap 'rm -rf "$$overlay"' EXIT && \
	cd "$$overlay" && \
	$(KUSTOMIZE) create --resources "$$(realpath --relative-to=. $(ROOT)/config/default)" && \
	$(KUSTOMIZE) edit set image "$(MANAGER_IMAGE)=$(IMG)" && \
	$(KUSTOMIZE) build . > $(1)
endef

build-installer: manifests $(KUSTOMIZE) ## Render config/default into dist/install.yaml (IMG sets the image).
	$(call render-installer,$(ROOT)/dist/install.yaml)
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

# A release: regenerate the chart's copies, then write the artefacts.
.PHONY: release
release: chart-crds chart-rbac ## Write dist/install.yaml (image pinned by tag) and the chart archive for VERSION.
	@$(MAKE) --no-print-directory release-artefacts

# The artefacts alone, from the committed generated files: DIST/install.yaml
# rendered with IMG, which must name a tag other than latest, and the chart
# archive, version CHART_VERSION with appVersion VERSION, whose default image
# is IMG too: the packaged values.yaml names IMG's repository, and its tag
# when that is not VERSION (the chart's default tag is its appVersion). The
# chart folder is copied, so nothing committed changes. The tests in
# test/install run this.
# CHART_VERSION is the packaged chart's version: VERSION without its v.
CHART_VERSION ?= $(patsubst v%,%,$(VERSION))
.PHONY: release-artefacts
release-artefacts: $(KUSTOMIZE) $(HELM)
	@img="$(IMG)"; tag="$${img##*/}"; case "$$tag" in \
	  *@*) echo "IMG=$(IMG): a release pins the image by tag, not digest" >&2; exit 1;; \
	  *:latest) echo "IMG=$(IMG): a release pins the image by a version tag, not latest" >&2; exit 1;; \
	  *:?*) ;; \
	  *) echo "IMG=$(IMG) has no tag: a release pins the image by tag" >&2; exit 1;; \
	esac
	$(call render-installer,$(DIST)/install.yaml)
	@chart=$$(mktemp -d) && trap 'rm -rf "$$chart"' EXIT && \
	cp -R $(ROOT)/$(CHART) "$$chart/" && values="$$chart/$(notdir $(CHART))/values.yaml" && \
	img="$(IMG)"; repo="$${img%:*}"; tag="$${img##*:}"; \
	if [ "$$tag" = "$(VERSION)" ]; then tag=""; fi; \
	sed -i -e 's|^  repository: $(MANAGER_IMAGE)$$|  repository: '"$$repo"'|' -e 's|^  tag: ""$$|  tag: "'"$$tag"'"|' "$$values" && \
	grep -qx "  repository: $$repo" "$$values" && grep -qx "  tag: \"$$tag\"" "$$values" || \
	  { echo "$(CHART)/values.yaml: no image.repository $(MANAGER_IMAGE) and empty image.tag to set to IMG" >&2; exit 1; }; \
	$(HELM) package "$$chart/$(notdir $(CHART))" --app-version $(VERSION) --version $(CHART_VERSION) --destination $(DIST)
	@echo "wrote $(DIST)/install.yaml and the chart $(CHART_VERSION) for $(VERSION), both with image $(IMG)"

.PHONY: verify-install
verify-install: build-installer chart-crds chart-rbac ## Regenerate the bundle and the chart's copies (make verify diffs them).

.PHONY: docker-build
docker-build: ## Build the manager image IMG (needs a Docker engine).
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the manager image IMG.
	$(CONTAINER_TOOL) push $(IMG)
