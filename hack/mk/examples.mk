# Worked examples that are Go modules of their own
# (controllers/examples/<name>/go.mod, with a replace of the operator's
# module to this clone), built, vetted and tested as a team outside this
# repository would: make test runs test-examples, make tidy tidies them.

EXAMPLE_MODULES := $(patsubst %/go.mod,%,$(wildcard controllers/examples/*/go.mod))

##@ Examples

.PHONY: test-examples
test-examples: envtest-assets ## Build, vet and test each example module against a real kube-apiserver.
	@for m in $(EXAMPLE_MODULES); do \
		echo "== $$m"; \
		(cd $$m && go build ./... && go vet ./... && \
			KUBEBUILDER_ASSETS=$(K8S_ASSETS) go test $(GO_TEST_FLAGS) ./...) || exit 1; \
	done

.PHONY: tidy-examples
tidy-examples: ## go mod tidy in each example module.
	@for m in $(EXAMPLE_MODULES); do (cd $$m && go mod tidy) || exit 1; done
