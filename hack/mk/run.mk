# Running the operator, and the end-to-end tests, on a local cluster.
#
#   make run            run the manager against the current kubeconfig context
#                       when it is reachable; otherwise bring up a local cluster
#                       in bin/local-cluster, install the CRDs and a sample
#                       CallbackConfig, run the manager, and print a curl
#                       command that sends a signed callback. Ctrl-C stops
#                       everything. RUN_ARGS=--local always uses a local
#                       cluster; extra manager flags go after `--`, e.g.
#                       RUN_ARGS='-- --zap-log-level=debug'.
#   make local-cluster  only the local cluster, until Ctrl-C
#   make test-e2e       the end-to-end tests (test/e2e) on a local cluster in
#                       bin/e2e-cluster, with the real bin/manager

LOCALCLUSTER := $(BIN)/localcluster
RUN_ARGS ?=
E2E_TEST_FLAGS ?= -v -timeout 20m

##@ Local cluster

# Always handed to go build, which rebuilds only when a source changed.
.PHONY: $(LOCALCLUSTER)
$(LOCALCLUSTER):
	go build -o $@ ./hack/localcluster

.PHONY: run
run: build $(LOCALCLUSTER) ## Run the operator (on a local cluster when no cluster is reachable).
	@if ! $(LOCALCLUSTER) reachable >/dev/null 2>&1 || [[ " $(RUN_ARGS) " == *" --local "* ]]; then \
		$(MAKE) --no-print-directory control-plane; \
	fi
	$(LOCALCLUSTER) run --manager $(BIN)/manager --dir $(BIN)/local-cluster $(RUN_ARGS)

.PHONY: local-cluster
local-cluster: control-plane $(LOCALCLUSTER) ## Run only the local cluster, until Ctrl-C.
	$(LOCALCLUSTER) up --dir $(BIN)/local-cluster

.PHONY: test-e2e
test-e2e: control-plane build ## Run the end-to-end tests on a local cluster with the real manager.
	MANAGER=$(BIN)/manager go test -tags e2e -count=1 $(E2E_TEST_FLAGS) ./test/e2e/
