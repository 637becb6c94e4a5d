// Command bench-controllers measures how fast the FriendDeletion reconciler
// turns a burst of FriendDeletions into Jobs, against the raw client-go
// ceiling of creating the same Jobs directly, on one control plane, and the
// manager's peak memory; with -retained, the manager's memory when many
// finished FriendDeletions are retained (see retainedPhase); with
// -object-size, the bytes stored per retained deletion (see
// objectSizePhase).
//
// It starts its own kube-apiserver and etcd (controllers/testenv, so
// KUBEBUILDER_ASSETS or K8S_ASSETS must name them), builds the manager from
// main.go and runs it as a separate process, the way it runs in a cluster.
//
//	go run ./hack/bench-controllers -n 5000 -rounds 5
//	go run ./hack/bench-controllers -retained 50000
//	go run ./hack/bench-controllers -object-size
//
// Each round has two phases, run one after the other so that both see the
// same machine:
//  1. raw: create n Jobs, shaped as the operator shapes them, with
//     -raw-workers goroutines of a client-go clientset (protobuf, no
//     client-side rate limit).
//  2. operator: create a CallbackConfig with one job step and n
//     FriendDeletions while no manager runs, then start a fresh manager and
//     time until every FriendDeletion has its Job, and until every one
//     shows phase Running.
//
// Between phases everything the last one made is deleted and the control
// plane is let settle, so each phase starts from the same cluster. Watches
// count Jobs and Running FriendDeletions in both phases alike. The report
// gives Jobs per second for both (the operator's counted from the manager's
// start, so it includes its start-up and cache sync), their ratio per round
// and over all rounds, the manager's peak RSS (VmHWM), how busy the CPUs
// were, and the API requests the manager made.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

type benchOptions struct {
	n, rounds, rawWorkers, createWorkers int
	managerArgs                          []string
	// retained, when set, runs the retained phase alone (see
	// retainedPhase) with that many finished FriendDeletions.
	retained    int
	steadyWait  time.Duration
	managerRuns []string
	// objectSize, when set, runs the object size phase alone (see
	// objectSizePhase).
	objectSize bool
	// dataDir, when set, is etcd's data directory, kept after the run, so
	// that a later retained run finds its FriendDeletions made already.
	dataDir string
	// maxSucceeded, when not negative, is the config's
	// retention.maxSucceeded in the retained runs.
	maxSucceeded int
	// baselineRef, when set, is a git revision whose manager each
	// retained run also measures, first, over the same FriendDeletions.
	baselineRef string
}

func main() {
	var o benchOptions
	flag.IntVar(&o.n, "n", 5000, "FriendDeletions (and raw Jobs) to create per round")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds of raw Jobs then the operator")
	flag.IntVar(&o.rawWorkers, "raw-workers", 32, "goroutines creating the raw Jobs")
	flag.IntVar(&o.createWorkers, "create-workers", 32, "goroutines creating the FriendDeletions before the manager starts")
	managerArgs := flag.String("manager-args", "", "extra flags for the manager, space separated")
	flag.Func("manager-env", "with -retained, one manager run with this extra environment (GOMEMLIMIT=... GOGC=..., space separated); "+
		"repeat for several runs over the same FriendDeletions (default one run, no extra environment)", func(v string) error {
		o.managerRuns = append(o.managerRuns, v)
		return nil
	})
	flag.IntVar(&o.retained, "retained", 0, "instead of the rounds, measure the manager's memory with this many finished FriendDeletions retained")
	flag.StringVar(&o.baselineRef, "baseline-ref", "", "with -retained, also build the manager at this git revision and measure it first in each run, as the baseline")
	flag.BoolVar(&o.objectSize, "object-size", false, "instead of the rounds, measure the bytes stored for one retained one-pair deletion (with -baseline-ref, for that revision too)")
	flag.StringVar(&o.dataDir, "data-dir", "", "with -retained, etcd's data directory, kept after the run: a later run with the same directory and -retained count reuses the FriendDeletions instead of creating them again")
	flag.IntVar(&o.maxSucceeded, "retention-max-succeeded", -1, "with -retained, set the config's retention.maxSucceeded to this (count retention sweeps at start-up); negative leaves it unset")
	flag.DurationVar(&o.steadyWait, "steady-wait", 30*time.Second, "with -retained, how long after the reconciler is quiet to read the manager's steady RSS")
	flag.Parse()
	o.managerArgs = strings.Fields(*managerArgs)
	log.SetLogger(logr.Discard()) // the FriendDeletion informer's cache
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-controllers:", err)
		os.Exit(1)
	}
}

// bench is what every phase uses.
type bench struct {
	benchOptions
	env        *testenv.Env
	cs         kubernetes.Interface
	bin        string
	baseBin    string // the manager at -baseline-ref
	kubeconfig string
	cp         []int // kube-apiserver and etcd
}

// roundResult is one round's figures.
type roundResult struct {
	raw, op, opFirstToLast, running time.Duration
	hwm                             int64
}

func run(o benchOptions) error {
	tmp, err := os.MkdirTemp("", "bench-controllers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Println("building the manager from main.go")
	b := &bench{benchOptions: o, bin: filepath.Join(tmp, "manager"), kubeconfig: filepath.Join(tmp, "kubeconfig")}
	build := exec.Command("go", "build", "-o", b.bin, ".")
	build.Dir = testenv.RepoRoot()
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the manager: %w", err)
	}
	if o.baselineRef != "" {
		fmt.Printf("building the manager at %s\n", o.baselineRef)
		b.baseBin = filepath.Join(tmp, "manager-baseline")
		if err := buildAt(o.baselineRef, filepath.Join(tmp, "baseline-src"), b.baseBin); err != nil {
			return fmt.Errorf("building the manager at %s: %w", o.baselineRef, err)
		}
	}

	fmt.Println("starting kube-apiserver and etcd")
	var envOpts []testenv.Option
	if o.dataDir != "" {
		envOpts = append(envOpts, func(e *envtest.Environment) { e.ControlPlane.Etcd = &envtest.Etcd{DataDir: o.dataDir} })
	}
	if b.env, err = testenv.Start(envOpts...); err != nil {
		return err
	}
	defer func() { _ = b.env.Stop() }()
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit, like the manager
	cfg.ContentType = apiruntime.ContentTypeProtobuf
	if b.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := writeKubeconfig(b.env.Config, b.kubeconfig); err != nil {
		return err
	}
	b.cp = controlPlanePIDs()
	fmt.Printf("machine: %d CPUs, load average before: %s\n", runtime.NumCPU(), loadavg())
	if o.retained > 0 {
		return b.retainedPhase("retained")
	}
	if o.objectSize {
		return b.objectSizePhase()
	}

	var results []roundResult
	for r := 1; r <= o.rounds; r++ {
		fmt.Printf("\nround %d of %d\n", r, o.rounds)
		var res roundResult
		if res.raw, err = b.rawPhase(fmt.Sprintf("raw-%d", r)); err != nil {
			return err
		}
		if err := b.opPhase(fmt.Sprintf("op-%d", r), &res); err != nil {
			return err
		}
		fmt.Printf("round %d: ratio operator/raw Jobs per second %.2f (from the first Job to the last %.2f)\n",
			r, res.raw.Seconds()/res.op.Seconds(), res.raw.Seconds()/res.opFirstToLast.Seconds())
		results = append(results, res)
	}

	var raw, op, ftl time.Duration
	var hwm int64
	ratios := make([]string, 0, len(results))
	values := make([]float64, 0, len(results))
	for _, res := range results {
		raw, op, ftl, hwm = raw+res.raw, op+res.op, ftl+res.opFirstToLast, max(hwm, res.hwm)
		ratios = append(ratios, fmt.Sprintf("%.2f", res.raw.Seconds()/res.op.Seconds()))
		values = append(values, res.raw.Seconds()/res.op.Seconds())
	}
	sort.Float64s(values)
	total := float64(o.n * len(results))
	fmt.Printf("\nsummary of %d rounds of %d:\n", len(results), o.n)
	fmt.Printf("  raw: %.0f Jobs/s; operator: %.0f Jobs/s from the manager's start, %.0f Jobs/s from its first Job\n",
		total/raw.Seconds(), total/op.Seconds(), total/ftl.Seconds())
	fmt.Printf("  ratio operator/raw Jobs per second: %.2f over all rounds, median round %.2f (per round %s; target >= 0.70)\n",
		raw.Seconds()/op.Seconds(), values[len(values)/2], strings.Join(ratios, ", "))
	fmt.Printf("  ratio from the operator's first Job to its last: %.2f over all rounds\n", raw.Seconds()/ftl.Seconds())
	fmt.Printf("  manager peak memory: VmHWM %.0f MiB (target < 200 MiB)\n", float64(hwm)/(1<<20))
	return nil
}

// buildAt builds the manager from main.go as it is at the git revision ref,
// extracted into dir.
func buildAt(ref, dir, out string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	extract := exec.Command("sh", "-c", `git archive "$1" | tar -x -C "$2"`, "sh", ref, dir)
	extract.Dir = testenv.RepoRoot()
	extract.Stderr = os.Stderr
	if err := extract.Run(); err != nil {
		return fmt.Errorf("extracting: %w", err)
	}
	build := exec.Command("go", "build", "-o", out, ".")
	build.Dir = dir
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	return build.Run()
}

// rawPhase creates n Jobs in ns straight with client-go and returns how
// long until the watch saw the last one.
func (b *bench) rawPhase(ns string) (time.Duration, error) {
	ctx := context.Background()
	if err := b.prepare(ns); err != nil {
		return 0, err
	}
	counter, err := countJobs(ctx, b.env.Config, ns, b.n)
	if err != nil {
		return 0, err
	}
	cpu0, cp0 := cpuTotals(), procCPU(b.cp...)
	start := time.Now()
	err = parallel(b.n, b.rawWorkers, func(i int) error {
		_, err := b.cs.BatchV1().Jobs(ns).Create(ctx, rawJob(ns, i), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raw Jobs: %w", err)
	}
	<-counter.done
	d := counter.last.Sub(start)
	busy, cp := cpuTotals().since(cpu0), procCPU(b.cp...)-cp0
	fmt.Printf("raw: %d Jobs in %s: %.0f Jobs/s (%d workers); CPU busy %.0f%% of %d cores (control plane %.0f%%, everything else %.0f%%)\n",
		b.n, d.Round(time.Millisecond), float64(b.n)/d.Seconds(), b.rawWorkers,
		busy.busyPct(), runtime.NumCPU(), pctOf(cp, busy), pctOf(busy.busy-cp, busy))
	return d, b.cleanUp(ns)
}

// opPhase creates n FriendDeletions in ns, starts the manager and times
// until every one has its Job and until every one is Running.
func (b *bench) opPhase(ns string, res *roundResult) error {
	ctx := context.Background()
	if err := b.prepare(ns); err != nil {
		return err
	}
	c := b.env.Client
	config := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{{
			Name: "purge", Job: &batchv1.JobTemplateSpec{Spec: jobSpec()},
		}}},
	}
	if err := c.Create(ctx, config); err != nil {
		return err
	}
	createStart := time.Now()
	err := parallel(b.n, b.createWorkers, func(i int) error { return c.Create(ctx, friendDeletion(ns, i)) })
	if err != nil {
		return fmt.Errorf("FriendDeletions: %w", err)
	}
	fmt.Printf("operator: created %d FriendDeletions in %s (manager not running)\n", b.n, time.Since(createStart).Round(time.Millisecond))
	if err := b.settle(); err != nil {
		return err
	}

	counter, err := countJobs(ctx, b.env.Config, ns, b.n)
	if err != nil {
		return err
	}
	running, stopRunning, err := countRunning(ctx, b.env.Config, ns, b.n)
	if err != nil {
		return err
	}
	defer stopRunning()
	args := append([]string{"--kubeconfig", b.kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--receiver-bind-address", "127.0.0.1:0", "--zap-log-level", "error"}, b.managerArgs...)
	mgr := exec.Command(b.bin, args...)
	mgr.Stdout, mgr.Stderr = os.Stdout, os.Stderr
	req0, err := apiRequests(ctx, b.cs)
	if err != nil {
		return err
	}
	cpu0, cp0 := cpuTotals(), procCPU(b.cp...)
	start := time.Now()
	if err := mgr.Start(); err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	defer func() { _ = mgr.Process.Kill(); _ = mgr.Wait() }()

	select {
	case <-counter.done:
	case <-time.After(15 * time.Minute):
		return fmt.Errorf("timed out: %d of %d Jobs", counter.seen(), b.n)
	}
	res.op, res.opFirstToLast = counter.last.Sub(start), counter.last.Sub(counter.first)
	busy, cp, mcpu := cpuTotals().since(cpu0), procCPU(b.cp...)-cp0, procCPU(mgr.Process.Pid)
	reqJobs, err := apiRequests(ctx, b.cs)
	if err != nil {
		return err
	}
	select {
	case <-running.done:
	case <-time.After(15 * time.Minute):
		return fmt.Errorf("timed out: %d of %d FriendDeletions Running", running.seen(), b.n)
	}
	res.running = running.last.Sub(start)
	req1, err := apiRequests(ctx, b.cs)
	if err != nil {
		return err
	}
	res.hwm = vmHWM(mgr.Process.Pid)

	fmt.Printf("operator: every FriendDeletion has its Job %s after the manager started: %.0f Jobs/s; "+
		"the first Job after %s, then %.0f Jobs/s\n", res.op.Round(time.Millisecond), float64(b.n)/res.op.Seconds(),
		counter.first.Sub(start).Round(time.Millisecond), float64(b.n-1)/res.opFirstToLast.Seconds())
	fmt.Printf("operator: every FriendDeletion shows phase Running %s after the manager started\n", res.running.Round(time.Millisecond))
	fmt.Printf("operator: CPU busy %.0f%% of %d cores until the last Job (control plane %.0f%%, manager %.0f%%, everything else %.0f%%)\n",
		busy.busyPct(), runtime.NumCPU(), pctOf(cp, busy), pctOf(mcpu, busy), pctOf(busy.busy-cp-mcpu, busy))
	fmt.Printf("operator: manager peak memory VmHWM %.0f MiB\n", float64(res.hwm)/(1<<20))
	fmt.Println("operator: API requests (verb resource code: count) until the last Job, and until every FriendDeletion was Running:")
	for _, k := range sortedKeys(req1) {
		if d := req1[k] - req0[k]; d > 0 {
			fmt.Printf("  %s: %.0f, %.0f\n", k, reqJobs[k]-req0[k], d)
		}
	}
	_ = mgr.Process.Kill()
	_ = mgr.Wait()
	return b.cleanUp(ns)
}

// prepare creates the phase's namespace and waits for the control plane to
// settle.
func (b *bench) prepare(ns string) error {
	_, err := b.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	return b.settle()
}

// cleanUp deletes the phase's Jobs and FriendDeletions (envtest runs no
// garbage collector), so that the next phase's watches and the next
// manager's cache start from the same cluster.
func (b *bench) cleanUp(ns string) error {
	ctx := context.Background()
	background := metav1.DeletePropagationBackground
	if err := b.cs.BatchV1().Jobs(ns).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("deleting Jobs: %w", err)
	}
	if err := b.env.Client.DeleteAllOf(ctx, &snsv1alpha1.FriendDeletion{}, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("deleting FriendDeletions: %w", err)
	}
	jobs, err := b.cs.BatchV1().Jobs("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var fds snsv1alpha1.FriendDeletionList
	if err := b.env.Client.List(ctx, &fds); err != nil {
		return err
	}
	if len(jobs.Items)+len(fds.Items) > 0 {
		return fmt.Errorf("after deleting, %d Jobs and %d FriendDeletions are left", len(jobs.Items), len(fds.Items))
	}
	return nil
}

// settle waits until the control plane has used less than a tenth of a
// core for two seconds in a row, at most a minute.
func (b *bench) settle() error {
	const window, quietWindows = 500 * time.Millisecond, 4
	ticks := float64(clockTicks) * window.Seconds()
	quiet := 0
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		before := procCPU(b.cp...)
		time.Sleep(window)
		if procCPU(b.cp...)-before >= ticks/10 {
			quiet = 0
			continue
		}
		if quiet++; quiet == quietWindows {
			return nil
		}
	}
	return fmt.Errorf("the control plane stayed busy for a minute")
}

// clockTicks is USER_HZ, the unit of /proc CPU times: 100 on Linux.
const clockTicks = 100

// apiRequests reads apiserver_request_total from the API server's metrics,
// keyed by "verb resource/subresource code", for writes and lists.
func apiRequests(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading API server metrics: %w", err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := map[string]string{}
		body := line[len("apiserver_request_total{"):strings.LastIndexByte(line, '}')]
		for _, kv := range strings.Split(body, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		switch labels["verb"] {
		case "POST", "PATCH", "PUT", "DELETE", "LIST", "GET", "WATCH":
		default:
			continue
		}
		res := labels["resource"]
		if labels["subresource"] != "" {
			res += "/" + labels["subresource"]
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		out[labels["verb"]+" "+res+" "+labels["code"]] += v
	}
	return out, nil
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func jobSpec() batchv1.JobSpec {
	return batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](2),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "purge", Image: "registry.example/im/purge:1.0",
				Command: []string{"/purge", "--pairs", "$(PAIRS_FILE)"},
			}},
		}},
	}
}

// rawJob is shaped like the operator's Jobs: labels, the contract's env and
// the pairs file inline (one pair), through the downward API.
func rawJob(ns string, i int) *batchv1.Job {
	name := fmt.Sprintf("fd-%05d", i)
	labels := map[string]string{snsv1alpha1.LabelFriendDeletion: name, snsv1alpha1.LabelStep: "purge",
		snsv1alpha1.LabelConfig: "app", snsv1alpha1.LabelSDKAppID: "1400000001"}
	spec := jobSpec()
	spec.Template.Labels = labels
	spec.Template.Annotations = map[string]string{"sns.imcallback.io/pairs": fmt.Sprintf(`[{"from":"user%05d","to":"friend"}]`, i)}
	spec.Template.Spec.Volumes = []corev1.Volume{{Name: "friend-deletion-pairs", VolumeSource: corev1.VolumeSource{
		DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{Path: "pairs.json",
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['sns.imcallback.io/pairs']"}}}}}}}
	c := &spec.Template.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "friend-deletion-pairs", MountPath: "/etc/friend-deletion", ReadOnly: true}}
	for _, kv := range [][2]string{{"FRIEND_DELETION_NAME", name}, {"FRIEND_DELETION_NAMESPACE", ns}, {"SDKAPPID", "1400000001"},
		{"PAIR_COUNT", "1"}, {"FROM_ACCOUNT", fmt.Sprintf("user%05d", i)}, {"TO_ACCOUNT", "friend"}, {"PAIRS_FILE", "/etc/friend-deletion/pairs.json"}} {
		c.Env = append(c.Env, corev1.EnvVar{Name: kv[0], Value: kv[1]})
	}
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name + "-purge", Labels: labels}, Spec: spec}
}

func friendDeletion(ns string, i int) *snsv1alpha1.FriendDeletion {
	return &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("fd-%05d", i),
			Labels: map[string]string{snsv1alpha1.LabelConfig: "app", snsv1alpha1.LabelSDKAppID: "1400000001"}},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: "app", SDKAppID: "1400000001", PairCount: 1,
			Pairs:    []snsv1alpha1.FriendPair{{From: fmt.Sprintf("user%05d", i), To: "friend"}},
			ClientIP: "203.0.113.7", OptPlatform: "RESTAPI", ReceivedAt: metav1.Now(),
		},
	}
}

// parallel runs f(0..n-1) on workers goroutines.
func parallel(n, workers int, f func(int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// nameCounter counts distinct names up to n: it notes when it saw the
// first and the nth, and closes done at the nth.
type nameCounter struct {
	n           int
	mu          sync.Mutex
	names       map[string]bool
	first, last time.Time
	done        chan struct{}
}

func newCounter(n int) *nameCounter {
	return &nameCounter{n: n, names: map[string]bool{}, done: make(chan struct{})}
}

// add counts name, once, and reports whether it was the nth.
func (c *nameCounter) add(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names[name] || len(c.names) == c.n {
		return false
	}
	c.names[name] = true
	now := time.Now()
	if len(c.names) == 1 {
		c.first = now
	}
	if len(c.names) < c.n {
		return false
	}
	c.last = now
	close(c.done)
	return true
}

// seen is how many names were counted so far.
func (c *nameCounter) seen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.names)
}

// countJobs follows a namespace's Jobs with a metadata-only informer (it
// lists again if the API server drops the watch) and counts them until n.
func countJobs(ctx context.Context, cfg *rest.Config, ns string, n int) (*nameCounter, error) {
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := newCounter(n)
	stop := make(chan struct{})
	inf := metadatainformer.NewFilteredMetadataInformer(mc, batchv1.SchemeGroupVersion.WithResource("jobs"), ns, 0, toolscache.Indexers{}, nil)
	_, err = inf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if m, ok := obj.(metav1.Object); ok && c.add(m.GetName()) {
			close(stop)
		}
	}})
	if err != nil {
		return nil, err
	}
	go inf.Informer().Run(stop)
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return nil, fmt.Errorf("Job informer did not sync")
	}
	return c, nil
}

// countRunning follows a namespace's FriendDeletions with an informer and
// counts those whose phase turned Running until n.
func countRunning(ctx context.Context, cfg *rest.Config, ns string, n int) (*nameCounter, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	ca, err := cache.New(cfg, cache.Options{Scheme: testenv.Scheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	inf, err := ca.GetInformer(ctx, &snsv1alpha1.FriendDeletion{})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	c := newCounter(n)
	count := func(obj any) {
		if fd, ok := obj.(*snsv1alpha1.FriendDeletion); ok && fd.Status.Phase == snsv1alpha1.PhaseRunning {
			c.add(fd.Name)
		}
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: count, UpdateFunc: func(_, o any) { count(o) }})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		cancel()
		return nil, nil, fmt.Errorf("FriendDeletion informer did not sync")
	}
	return c, cancel, nil
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}

// controlPlanePIDs finds this process's kube-apiserver and etcd children.
func controlPlanePIDs() []int {
	var pids []int
	me := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == me {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procCPU is the CPU time (in clock ticks) the processes used so far.
func procCPU(pids ...int) float64 {
	total := 0.0
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		total += u + s
	}
	return total
}

type cpuSample struct{ busy, total float64 }

// cpuTotals reads the machine's CPU time from /proc/stat, in clock ticks.
func cpuTotals() cpuSample {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan()
	var c cpuSample
	for i, v := range strings.Fields(s.Text())[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		c.total += x
		if i != 3 && i != 4 { // idle, iowait
			c.busy += x
		}
	}
	return c
}

func (c cpuSample) since(o cpuSample) cpuSample { return cpuSample{c.busy - o.busy, c.total - o.total} }

// busyPct is the share of all cores' time that was busy.
func (c cpuSample) busyPct() float64 { return 100 * c.busy / c.total }

// pctOf is ticks as a share of all cores' time.
func pctOf(ticks float64, c cpuSample) float64 { return 100 * ticks / c.total }

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// sampleRSS records the highest VmRSS of pid every 100ms until stopped.
func sampleRSS(pid int, peak *atomic.Int64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := statusKB(pid, "VmRSS:") * 1024; v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-done }
}

func vmHWM(pid int) int64 { return statusKB(pid, "VmHWM:") * 1024 }

func statusKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			v, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return v
		}
	}
	return 0
}
