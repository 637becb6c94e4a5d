// Command bench-controllers measures how fast the FriendDeletion reconciler
// turns a burst of FriendDeletions into Jobs, against the raw client-go
// ceiling of creating the same Jobs directly, in one run on one control
// plane, and the manager's peak memory.
//
// It starts its own kube-apiserver and etcd (internal/testenv, so
// KUBEBUILDER_ASSETS or K8S_ASSETS must name them), builds the manager from
// main.go and runs it as a separate process, the way it runs in a cluster.
//
//	go run ./hack/bench-controllers -n 5000
//
// Phases:
//  1. raw: create n Jobs, shaped as the operator shapes them, with
//     -raw-workers goroutines of a client-go clientset (protobuf, no
//     client-side rate limit).
//  2. operator: create a CallbackConfig with one job step and n
//     FriendDeletions while no manager runs, then start the manager and time
//     until every FriendDeletion has its Job (and until every one shows
//     phase Running).
//
// A watch counts Jobs in both phases, so both pay for one watcher. The
// report gives Jobs per second for both, their ratio, the manager's peak
// RSS (VmHWM), and how busy the machine's CPUs were, split between the
// control plane, the manager and everything else.
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
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/internal/testenv"
)

func main() {
	n := flag.Int("n", 5000, "FriendDeletions (and raw Jobs) to create")
	rawWorkers := flag.Int("raw-workers", 32, "goroutines creating the raw Jobs")
	createWorkers := flag.Int("create-workers", 32, "goroutines creating the FriendDeletions before the manager starts")
	managerArgs := flag.String("manager-args", "", "extra flags for the manager, space separated")
	flag.Parse()
	if err := run(*n, *rawWorkers, *createWorkers, strings.Fields(*managerArgs)); err != nil {
		fmt.Fprintln(os.Stderr, "bench-controllers:", err)
		os.Exit(1)
	}
}

func run(n, rawWorkers, createWorkers int, managerArgs []string) error {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "bench-controllers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Println("building the manager from main.go")
	bin := filepath.Join(tmp, "manager")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = testenv.RepoRoot()
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the manager: %w", err)
	}

	fmt.Println("starting kube-apiserver and etcd")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit, like the manager
	cfg.ContentType = apiruntime.ContentTypeProtobuf
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := writeKubeconfig(env.Config, kubeconfig); err != nil {
		return err
	}
	cp := controlPlanePIDs()
	for _, ns := range []string{"raw", "op"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	fmt.Printf("machine: %d CPUs, load average before: %s\n", runtime.NumCPU(), loadavg())

	// Phase 1: the raw ceiling.
	counter, err := countJobs(ctx, env.Config, "raw", n)
	if err != nil {
		return err
	}
	cpu0, cp0 := cpuTotals(), procCPU(cp...)
	start := time.Now()
	err = parallel(n, rawWorkers, func(i int) error {
		_, err := cs.BatchV1().Jobs("raw").Create(ctx, rawJob(i), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("raw Jobs: %w", err)
	}
	<-counter.done
	rawDur := counter.last.Sub(start)
	rawBusy, rawCP := cpuTotals().since(cpu0), procCPU(cp...)-cp0
	rawRate := float64(n) / rawDur.Seconds()
	fmt.Printf("raw: %d Jobs in %s: %.0f Jobs/s (%d workers)\n", n, rawDur.Round(time.Millisecond), rawRate, rawWorkers)
	fmt.Printf("raw: CPU busy %.0f%% of %d cores (control plane %.0f%%, everything else %.0f%%)\n",
		rawBusy.busyPct(), runtime.NumCPU(), pctOf(rawCP, rawBusy), pctOf(rawBusy.busy-rawCP, rawBusy))

	// Phase 2: the operator.
	c := env.Client
	config := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "op", Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{{
			Name: "purge", Job: &batchv1.JobTemplateSpec{Spec: jobSpec()},
		}}},
	}
	if err := c.Create(ctx, config); err != nil {
		return err
	}
	createStart := time.Now()
	err = parallel(n, createWorkers, func(i int) error { return c.Create(ctx, friendDeletion(i)) })
	if err != nil {
		return fmt.Errorf("FriendDeletions: %w", err)
	}
	fmt.Printf("operator: created %d FriendDeletions in %s (manager not running)\n", n, time.Since(createStart).Round(time.Millisecond))

	counter, err = countJobs(ctx, env.Config, "op", n)
	if err != nil {
		return err
	}
	args := append([]string{"--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--receiver-bind-address", "127.0.0.1:0", "--zap-log-level", "error"}, managerArgs...)
	mgr := exec.Command(bin, args...)
	mgr.Stdout, mgr.Stderr = os.Stdout, os.Stderr
	req0, err := apiRequests(ctx, cs)
	if err != nil {
		return err
	}
	cpu0, cp0 = cpuTotals(), procCPU(cp...)
	start = time.Now()
	if err := mgr.Start(); err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	defer func() { _ = mgr.Process.Kill(); _ = mgr.Wait() }()
	var peakRSS atomic.Int64
	stopSampling := sampleRSS(mgr.Process.Pid, &peakRSS)

	select {
	case <-counter.done:
	case <-time.After(15 * time.Minute):
		return fmt.Errorf("timed out: %d of %d Jobs", counter.seen.Load(), n)
	}
	opDur := counter.last.Sub(start)
	jobsBusy, jobsCP, jobsMgr := cpuTotals().since(cpu0), procCPU(cp...)-cp0, procCPU(mgr.Process.Pid)
	running, err := waitAllRunning(ctx, c, n, 10*time.Minute)
	if err != nil {
		return err
	}
	runDur := running.Sub(start)
	stopSampling()
	req1, err := apiRequests(ctx, cs)
	if err != nil {
		return err
	}
	hwm := vmHWM(mgr.Process.Pid)

	opRate := float64(n) / opDur.Seconds()
	fmt.Printf("operator: every FriendDeletion has its Job %s after the manager started: %.0f Jobs/s\n", opDur.Round(time.Millisecond), opRate)
	fmt.Printf("operator: every FriendDeletion shows phase Running %s after the manager started\n", runDur.Round(time.Millisecond))
	fmt.Printf("operator: CPU busy %.0f%% of %d cores until the last Job (control plane %.0f%%, manager %.0f%%, everything else %.0f%%)\n",
		jobsBusy.busyPct(), runtime.NumCPU(), pctOf(jobsCP, jobsBusy), pctOf(jobsMgr, jobsBusy), pctOf(jobsBusy.busy-jobsCP-jobsMgr, jobsBusy))
	fmt.Printf("ratio operator/raw Jobs per second: %.2f (target >= 0.70)\n", opRate/rawRate)
	fmt.Printf("manager peak memory: VmHWM %.0f MiB, highest sampled RSS %.0f MiB (target < 200 MiB)\n",
		float64(hwm)/(1<<20), float64(peakRSS.Load())/(1<<20))
	fmt.Println("API requests while the manager ran (verb resource code: count), writes and lists:")
	for _, k := range sortedKeys(req1) {
		if d := req1[k] - req0[k]; d > 0 {
			fmt.Printf("  %s: %.0f\n", k, d)
		}
	}
	fmt.Printf("load average after: %s\n", loadavg())
	return nil
}

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
		case "POST", "PATCH", "PUT", "DELETE", "LIST", "GET":
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
// the pairs volume.
func rawJob(i int) *batchv1.Job {
	name := fmt.Sprintf("fd-%05d", i)
	labels := map[string]string{snsv1alpha1.LabelFriendDeletion: name, snsv1alpha1.LabelStep: "purge",
		snsv1alpha1.LabelConfig: "app", snsv1alpha1.LabelSDKAppID: "1400000001"}
	spec := jobSpec()
	spec.Template.Labels = labels
	spec.Template.Spec.Volumes = []corev1.Volume{{Name: "friend-deletion-pairs", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-pairs"}}}}}
	c := &spec.Template.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "friend-deletion-pairs", MountPath: "/etc/friend-deletion", ReadOnly: true}}
	for _, kv := range [][2]string{{"FRIEND_DELETION_NAME", name}, {"FRIEND_DELETION_NAMESPACE", "raw"}, {"SDKAPPID", "1400000001"},
		{"PAIR_COUNT", "1"}, {"FROM_ACCOUNT", fmt.Sprintf("user%05d", i)}, {"TO_ACCOUNT", "friend"}, {"PAIRS_FILE", "/etc/friend-deletion/pairs.json"}} {
		c.Env = append(c.Env, corev1.EnvVar{Name: kv[0], Value: kv[1]})
	}
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name + "-purge", Labels: labels}, Spec: spec}
}

func friendDeletion(i int) *snsv1alpha1.FriendDeletion {
	return &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: "op", Name: fmt.Sprintf("fd-%05d", i),
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

type jobCounter struct {
	seen atomic.Int64
	last time.Time
	done chan struct{}
}

// countJobs follows a namespace's Jobs with a metadata-only informer (it
// lists again if the API server drops the watch) and closes done when n
// distinct Jobs were seen.
func countJobs(ctx context.Context, cfg *rest.Config, ns string, n int) (*jobCounter, error) {
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &jobCounter{done: make(chan struct{})}
	stop := make(chan struct{})
	inf := metadatainformer.NewFilteredMetadataInformer(mc, batchv1.SchemeGroupVersion.WithResource("jobs"), ns, 0, toolscache.Indexers{}, nil)
	var mu sync.Mutex
	seen := map[string]bool{}
	_, err = inf.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		m, ok := obj.(metav1.Object)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[m.GetName()] {
			return
		}
		seen[m.GetName()] = true
		if int(c.seen.Add(1)) == n {
			c.last = time.Now()
			close(c.done)
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

// waitAllRunning polls until every FriendDeletion's phase is Running.
func waitAllRunning(ctx context.Context, c client.Client, n int, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var list snsv1alpha1.FriendDeletionList
		if err := c.List(ctx, &list, client.InNamespace("op")); err != nil {
			return time.Time{}, err
		}
		running := 0
		for _, fd := range list.Items {
			if fd.Status.Phase == snsv1alpha1.PhaseRunning {
				running++
			}
		}
		if running == n {
			return time.Now(), nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("not every FriendDeletion Running after %s", limit)
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
