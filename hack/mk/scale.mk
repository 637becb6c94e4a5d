# The scale benchmark (hack/bench-scale) on a local cluster per config.

# The scale benchmark: BENCH_SCALE_FLAGS='-n 300 -configs unbatched', or
# '-etcd-fsync'; `go run ./hack/bench-scale -help` lists every flag.
BENCH_SCALE_FLAGS ?=

.PHONY: bench-scale
bench-scale: control-plane build ## Callbacks to Succeeded on a local cluster, unbatched and batched: deletions/s, API writes and bytes stored per deletion, manager peak RSS.
	go run ./hack/bench-scale -manager $(BIN)/manager $(BENCH_SCALE_FLAGS)
