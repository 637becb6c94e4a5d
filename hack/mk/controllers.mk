# Targets of the controllers (controllers/, hack/bench-controllers).

BENCH_N ?= 5000

.PHONY: test-controllers
test-controllers: envtest-assets ## Run the controllers' unit and envtest suites.
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go test $(GO_TEST_FLAGS) ./controllers/...

.PHONY: bench-controllers
bench-controllers: envtest-assets ## Time BENCH_N FriendDeletions to Jobs against raw client-go; manager peak memory.
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go run ./hack/bench-controllers -n $(BENCH_N)

BENCH_RETAINED ?= 50000
# BENCH_RETAINED_ARGS, e.g. -data-dir /tmp/etcd-50k (reuse the FriendDeletions
# of an earlier run), -baseline-ref <rev>, -manager-env GOMEMLIMIT=230MiB.
BENCH_RETAINED_ARGS ?=

.PHONY: bench-retained
bench-retained: envtest-assets ## Manager peak and steady memory with BENCH_RETAINED finished FriendDeletions retained.
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go run ./hack/bench-controllers -retained $(BENCH_RETAINED) $(BENCH_RETAINED_ARGS)

.PHONY: bench-object-size
bench-object-size: envtest-assets ## Bytes stored for one retained one-pair deletion (job and http steps), through the real receiver and manager.
	KUBEBUILDER_ASSETS=$(K8S_ASSETS) go run ./hack/bench-controllers -object-size
