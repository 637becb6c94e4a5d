# Callback receiver (webhook/): load test against a local control plane.

BENCH_RECEIVER_FLAGS ?=

.PHONY: bench-receiver
bench-receiver: envtest-assets ## Load-test the callback receiver against a local kube-apiserver.
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go run ./hack/loadtest-receiver $(BENCH_RECEIVER_FLAGS)

.PHONY: test-receiver
test-receiver: envtest-assets ## Run the callback receiver's tests only.
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go test $(GO_TEST_FLAGS) ./webhook/...
