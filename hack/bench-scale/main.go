// Command bench-scale measures the operator at scale on the local cluster
// (hack/localcluster: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler with default settings, kwok as the kubelet), end to end:
// signed callbacks through the real receiver, FriendDeletions through the
// real controllers, Jobs through the real Job controller, an http step to a
// local sink.
//
// For each config it runs (-configs: unbatched, then batched), on a fresh
// cluster of its own, it sends -n one-pair callbacks (distinct accounts) at
// -rate per second and reports:
//   - end-to-end deletions/s: from the first callback sent to the last
//     FriendDeletion seen Succeeded;
//   - API writes per deletion by resource and in total, all clients
//     (controller-manager, scheduler, kwok, the operator), from the API
//     server's apiserver_request_total (verbs POST, PUT, PATCH, DELETE,
//     DELETECOLLECTION, APPLY), the difference between just before
//     the first callback and once the cluster is quiet again;
//   - bytes stored per retained deletion: the JSON size of every object the
//     run left in the namespace (FriendDeletions, Jobs, Pods, ConfigMaps,
//     Events), summed and divided by the deletions; and the growth of
//     etcd's database as a second figure;
//   - the peak RSS (VmHWM) of the controllers' and the receiver's processes
//     (the built manager binary, one process per role as installed).
//
// Then it prints the configs side by side with the targets of issue 10.
// Run it with `make bench-scale` (BENCH_SCALE_FLAGS for flags), or
// `K8S_ASSETS=<control-plane binaries> go run ./hack/bench-scale -manager bin/manager`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// flags are the command line.
type flags struct {
	n           int
	rate        float64
	concurrency int
	configs     []string
	batch       map[string]any
	batchRaw    string
	etcdFsync   bool
	timeout     time.Duration
	quiet       time.Duration
	manager     string
	assets      string
	keep        bool
}

func main() {
	var f flags
	var configs string
	// A flag set of its own: controller-runtime registers -kubeconfig on the
	// global one, which this tool does not use.
	fs := flag.NewFlagSet("bench-scale", flag.ExitOnError)
	fs.IntVar(&f.n, "n", 5000, "callbacks to send per config, one pair each, distinct accounts")
	fs.Float64Var(&f.rate, "rate", 200, "callbacks per second (open loop: each leaves on schedule unless -concurrency are in flight); end-to-end deletions/s cannot exceed it, so keep it above what the config can do")
	fs.IntVar(&f.concurrency, "concurrency", 32, "callbacks in flight at most")
	fs.StringVar(&configs, "configs", "unbatched,batched", "configs to run, in order, each on a fresh cluster: unbatched (a job step and an http step), batched (the same with -batch on the job step)")
	fs.StringVar(&f.batchRaw, "batch", `{"maxDeletions":1000,"maxWait":"5s"}`, "the job step's batch block in the batched config, as JSON (fields maxDeletions, maxPairs, maxWait)")
	fs.BoolVar(&f.etcdFsync, "etcd-fsync", false, "run etcd with fsync on, as production does (default: --unsafe-no-fsync, as the local cluster runs it)")
	fs.DurationVar(&f.timeout, "timeout", 45*time.Minute, "longest wait, per config, for every FriendDeletion to finish; the figures then cover those that did")
	fs.DurationVar(&f.quiet, "quiet", 5*time.Second, "once every FriendDeletion finished and its Jobs and Pods are gone, the cluster counts as quiet when no write happens for this long")
	fs.StringVar(&f.manager, "manager", "bin/manager", "the manager binary (make build)")
	fs.StringVar(&f.assets, "assets", os.Getenv("K8S_ASSETS"), "folder of the control-plane binaries (make control-plane)")
	fs.BoolVar(&f.keep, "keep", false, "keep each cluster's folder (logs of every component) after the run; it is kept anyway when a config fails")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: bench-scale [flags]\n\n"+
			"Sends -n signed callbacks at -rate through the real receiver to a CallbackConfig with a job step and an\n"+
			"http step, on a fresh local cluster per config, and reports end-to-end deletions/s, API writes per\n"+
			"deletion by resource (all clients), bytes stored per retained deletion and the manager's peak RSS,\n"+
			"then the configs side by side with the targets of issue 10. Each config starts its own cluster in a\n"+
			"temporary folder on free ports. On 2 cores the unbatched config takes about 3-4 deletions/s, so\n"+
			"-n 5000 runs about half an hour; -n 300 a few minutes.\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	for _, c := range strings.Split(configs, ",") {
		if c = strings.TrimSpace(c); c != "" {
			f.configs = append(f.configs, c)
		}
	}
	if err := f.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(2)
	}
	// The FriendDeletion watch logs through controller-runtime: errors only.
	ctrllog.SetLogger(funcr.New(func(prefix, args string) {
		if strings.Contains(args, `"error"`) {
			fmt.Fprintln(os.Stderr, prefix, args)
		}
	}, funcr.Options{}))
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(1)
	}
}

func (f *flags) validate() error {
	switch {
	case f.n < 1:
		return fmt.Errorf("-n %d: want at least 1", f.n)
	case f.rate <= 0:
		return fmt.Errorf("-rate %g: want a positive rate", f.rate)
	case f.concurrency < 1:
		return fmt.Errorf("-concurrency %d: want at least 1", f.concurrency)
	case len(f.configs) == 0:
		return errors.New("-configs names no config")
	case f.assets == "":
		return errors.New("-assets (or K8S_ASSETS) must name the folder of the control-plane binaries: run through `make bench-scale`, which sets it")
	}
	for _, c := range f.configs {
		if c != configUnbatched && c != configBatched {
			return fmt.Errorf("-configs: unknown config %q: want %s or %s", c, configUnbatched, configBatched)
		}
	}
	if err := json.Unmarshal([]byte(f.batchRaw), &f.batch); err != nil {
		return fmt.Errorf("-batch %q is not a JSON object: %w", f.batchRaw, err)
	}
	if _, err := os.Stat(f.manager); err != nil {
		return fmt.Errorf("the manager binary %s is missing: run `make build` (make bench-scale does)", f.manager)
	}
	return nil
}

func run(ctx context.Context, f flags) error {
	fmt.Printf("bench-scale: %d callbacks per config at %g/s (at most %d in flight), etcd: %s, configs %s\n",
		f.n, f.rate, f.concurrency, fsyncWord(f.etcdFsync), strings.Join(f.configs, ", "))
	fmt.Printf("machine: %d CPUs, %s, load average %s\n", runtime.NumCPU(), runtime.Version(), loadAvg())

	// A batched config needs the CRD to know cleanup[].batch. Say so now,
	// not after the unbatched run, and skip it rather than measure a config
	// the API server would prune to an unbatched one.
	skipped := map[string]error{}
	for _, c := range f.configs {
		if c == configBatched {
			if err := crdHasBatch(); err != nil {
				skipped[c] = err
				fmt.Printf("\nbatched: CANNOT RUN: %v\n\n", err)
			}
		}
	}

	var results []*result
	var failed []string
	for _, name := range f.configs {
		if err := skipped[name]; err != nil {
			results = append(results, &result{config: name, err: err})
			failed = append(failed, name)
			continue
		}
		res, err := runConfig(ctx, f, name)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			fmt.Printf("\n%s: FAILED: %v\n", name, err)
			res = &result{config: name, err: err}
			failed = append(failed, name)
		}
		results = append(results, res)
		res.print()
	}
	printComparison(results, f)
	if len(failed) > 0 {
		return fmt.Errorf("not measured: %s (see above)", strings.Join(failed, ", "))
	}
	return nil
}

func fsyncWord(on bool) string {
	if on {
		return "fsync on"
	}
	return "fsync off (--unsafe-no-fsync)"
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}
