package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// retainedPhase measures what the manager costs in memory when n finished
// FriendDeletions are retained: it creates them (each Succeeded, with the
// status the reconciler writes for a job step and an http step), then
// starts the manager and reports its peak RSS (VmHWM) from its start until
// every FriendDeletion has been reconciled once and its work queue is
// empty, the time to its FriendDeletion cache sync, and its RSS and Go heap
// once quiet.
func (b *bench) retainedPhase(ns string) error {
	ctx := context.Background()
	c := b.env.Client
	if b.dataDir != "" {
		var have metav1.PartialObjectMetadataList
		have.SetGroupVersionKind(snsv1alpha1.GroupVersion.WithKind("FriendDeletionList"))
		// The API server answers 429 while its cache of the stored
		// objects fills.
		listCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := poll(listCtx, func() (bool, error) { return c.List(listCtx, &have, client.InNamespace(ns)) == nil, nil })
		cancel()
		if err != nil {
			return fmt.Errorf("listing the FriendDeletions in %s: %w", b.dataDir, err)
		}
		if len(have.Items) == b.retained {
			fmt.Printf("retained: %d finished FriendDeletions found in %s, made by an earlier run\n", b.retained, b.dataDir)
			if err := b.settle(); err != nil {
				return err
			}
			return b.measureRetainedRuns(ns)
		}
		if len(have.Items) > 0 {
			return fmt.Errorf("%s holds %d FriendDeletions in namespace %s, not %d: use another -data-dir", b.dataDir, len(have.Items), ns, b.retained)
		}
	}
	if err := b.prepare(ns); err != nil {
		return err
	}
	config := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{
			{Name: "purge", Job: &batchv1.JobTemplateSpec{Spec: jobSpec()}},
			{Name: "notify", HTTP: &snsv1alpha1.HTTPStep{URL: "http://sink.example.svc/friend-deleted"}},
		}},
	}
	if err := c.Create(ctx, config); err != nil {
		return err
	}
	fmt.Printf("retained: creating %d finished FriendDeletions (%d workers)\n", b.retained, b.createWorkers)
	createStart := time.Now()
	var made atomic.Int64
	stopProgress := progress(&made, b.retained)
	err := parallel(b.retained, b.createWorkers, func(i int) error {
		fd := friendDeletion(ns, i)
		if err := c.Create(ctx, fd); err != nil {
			return err
		}
		fd.Status = finishedStatus(fd, i)
		if err := c.Status().Update(ctx, fd); err != nil {
			return err
		}
		made.Add(1)
		return nil
	})
	stopProgress()
	if err != nil {
		return fmt.Errorf("FriendDeletions: %w", err)
	}
	setup := time.Since(createStart)
	fmt.Printf("retained: created %d finished FriendDeletions in %s (%.0f/s, create and status write each)\n",
		b.retained, setup.Round(time.Millisecond), float64(b.retained)/setup.Seconds())
	if err := b.settle(); err != nil {
		return err
	}
	return b.measureRetainedRuns(ns)
}

// measureRetainedRuns measures the manager (and the baseline's) once per
// -manager-env over the retained FriendDeletions in ns.
func (b *bench) measureRetainedRuns(ns string) error {
	if b.maxSucceeded >= 0 {
		if err := b.setMaxSucceeded(ns); err != nil {
			return err
		}
	}
	runs := b.managerRuns
	if len(runs) == 0 {
		runs = []string{""}
	}
	for _, env := range runs {
		bins := [][2]string{{"current", b.bin}}
		if b.baseBin != "" {
			bins = [][2]string{{"baseline " + b.baselineRef, b.baseBin}, bins[0]}
		}
		for _, bin := range bins {
			if err := b.measureRetained(ns, bin[0], bin[1], strings.Fields(env)); err != nil {
				return err
			}
			if err := b.settle(); err != nil {
				return err
			}
		}
	}
	// No clean-up: deleting tens of thousands at once overwhelms a test
	// control plane, and this one stops with the tool.
	return nil
}

// measureRetained starts the manager bin, with env added to this process's
// environment, on the retained FriendDeletions and reports its memory.
func (b *bench) measureRetained(ns, label, bin string, env []string) error {
	ctx := context.Background()
	fmt.Printf("\nretained: %s manager, extra environment %q\n", label, env)
	req0, err := apiRequests(ctx, b.cs)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	args := append([]string{"--kubeconfig", b.kubeconfig, "--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--metrics-secure=false", "--health-probe-bind-address", "0", "--receiver-bind-address", "127.0.0.1:0",
		"--zap-log-level", "info"}, b.managerArgs...)
	mgr := exec.Command(bin, args...)
	mgr.Env = append(os.Environ(), env...)
	stderr, err := mgr.StderrPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := mgr.Start(); err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	defer func() { _ = mgr.Process.Kill(); _ = mgr.Wait() }()
	synced := watchLog(stderr, "Starting workers", `"controller":"frienddeletion"`)

	var syncedAfter time.Duration
	select {
	case <-synced:
		syncedAfter = time.Since(start)
	case <-time.After(15 * time.Minute):
		return fmt.Errorf("timed out waiting for the FriendDeletion cache to sync")
	}
	// Quiet: every FriendDeletion reconciled once (retention asks to be
	// called again at its end) and nothing waiting in the queue, twice in a
	// row a second apart.
	quiet := 0
	var m map[string]float64
	for deadline := time.Now().Add(15 * time.Minute); quiet < 2; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for the reconciler to go quiet: %.0f reconciles, queue depth %.0f",
				m[`controller_runtime_reconcile_total{controller="frienddeletion"}`], m[`workqueue_depth{name="frienddeletion"}`])
		}
		if m, err = scrape(metricsURL); err != nil {
			continue
		}
		if m[`controller_runtime_reconcile_total{controller="frienddeletion"}`] >= float64(b.retained) &&
			m[`workqueue_depth{name="frienddeletion"}`] == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	quietAfter := time.Since(start)
	hwmQuiet := vmHWM(mgr.Process.Pid)
	time.Sleep(b.steadyWait)
	if m, err = scrape(metricsURL); err != nil {
		return err
	}
	hwm, rss := vmHWM(mgr.Process.Pid), statusKB(mgr.Process.Pid, "VmRSS:")*1024

	const mib = 1 << 20
	fmt.Printf("retained: manager's FriendDeletion cache synced %s after its start; every FriendDeletion reconciled and the queue empty after %s\n",
		syncedAfter.Round(time.Millisecond), quietAfter.Round(time.Millisecond))
	fmt.Printf("retained: manager peak memory VmHWM %.0f MiB (%.0f MiB when quiet; target <= 250 MiB)\n", float64(hwm)/mib, float64(hwmQuiet)/mib)
	fmt.Printf("retained: manager steady RSS %.0f MiB %s after quiet; Go heap in use %.0f MiB, live objects %.0f MiB, next GC at %.0f MiB, sys %.0f MiB\n",
		float64(rss)/mib, b.steadyWait, m["go_memstats_heap_inuse_bytes"]/mib, m["go_memstats_heap_alloc_bytes"]/mib,
		m["go_memstats_next_gc_bytes"]/mib, m["go_memstats_sys_bytes"]/mib)
	req1, err := apiRequests(ctx, b.cs)
	if err != nil {
		return err
	}
	var writes float64
	for k, v := range req1 {
		if strings.HasPrefix(k, "PATCH frienddeletions") || strings.HasPrefix(k, "PUT frienddeletions") || strings.HasPrefix(k, "DELETE frienddeletions") {
			writes += v - req0[k]
		}
	}
	fmt.Printf("retained: FriendDeletion writes while the manager ran: %.0f (none expected: every one is finished and within its retention); "+
		"lists %.0f, watches %.0f\n", writes, delta(req0, req1, "LIST frienddeletions"), delta(req0, req1, "WATCH frienddeletions"))
	fmt.Printf("retained: %.1f KiB of peak RSS per retained FriendDeletion\n", float64(hwm)/1024/float64(b.retained))
	return nil
}

// finishedStatus is the status the reconciler leaves on a FriendDeletion
// whose job step and http step both succeeded.
func finishedStatus(fd *snsv1alpha1.FriendDeletion, i int) snsv1alpha1.FriendDeletionStatus {
	t0 := metav1.NewTime(fd.CreationTimestamp.Time)
	t1 := metav1.NewTime(t0.Add(7 * time.Second))
	t2 := metav1.NewTime(t1.Add(80 * time.Millisecond))
	job := fmt.Sprintf("fd-%05d-purge", i)
	step := func(name, reason, msg string, at metav1.Time) metav1.Condition {
		return metav1.Condition{Type: snsv1alpha1.StepConditionType(name), Status: metav1.ConditionTrue, ObservedGeneration: 1,
			LastTransitionTime: at, Reason: reason, Message: msg}
	}
	return snsv1alpha1.FriendDeletionStatus{
		ObservedGeneration: 1,
		Phase:              snsv1alpha1.PhaseSucceeded,
		Steps: []snsv1alpha1.StepStatus{
			{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseSucceeded, Attempts: 1,
				Message: fmt.Sprintf("Job %s completed.", job), JobName: job, StartTime: &t0, CompletionTime: &t1},
			{Name: "notify", Type: snsv1alpha1.StepTypeHTTP, Phase: snsv1alpha1.PhaseSucceeded, Attempts: 1,
				Message: "Attempt 1 of 5 succeeded.", Request: "POST http://sink.example.svc/friend-deleted",
				StartTime: &t1, CompletionTime: &t2},
		},
		Conditions: []metav1.Condition{
			{Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: t2,
				Reason: snsv1alpha1.ReasonSucceeded, Message: "All 2 cleanup steps succeeded."},
			step("purge", snsv1alpha1.ReasonSucceeded, fmt.Sprintf("Job %s completed.", job), t1),
			step("notify", snsv1alpha1.ReasonSucceeded, "Attempt 1 of 5 succeeded.", t2),
		},
		CompletionTime: &t2,
	}
}

// progress prints how many of n are made every 10 seconds until stopped.
func progress(made *atomic.Int64, n int) func() {
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Printf("  %d of %d\n", made.Load(), n)
			}
		}
	}()
	return func() { close(stop) }
}

// watchLog copies r to stderr, dropping info lines, and closes the
// returned channel at the first line that holds every one of substrs.
func watchLog(r io.Reader, substrs ...string) <-chan struct{} {
	found := make(chan struct{})
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		closed := false
		for s.Scan() {
			line := s.Text()
			if !closed && containsAll(line, substrs) {
				close(found)
				closed = true
			}
			if !strings.Contains(line, `"level":"info"`) {
				fmt.Fprintln(os.Stderr, line)
			}
		}
	}()
	return found
}

func containsAll(s string, substrs []string) bool {
	for _, sub := range substrs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// scrape reads a Prometheus text endpoint into "name{labels}" -> value,
// summing series over the labels other than controller and name.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		key := line[:sp]
		if name, labels, ok := strings.Cut(key, "{"); ok {
			key = name
			for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
				if strings.HasPrefix(kv, "controller=") || strings.HasPrefix(kv, "name=") {
					key = name + "{" + kv + "}"
				}
			}
		}
		out[key] += v
	}
	return out, s.Err()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// delta sums the growth of the counters whose key starts with prefix.
func delta(before, after map[string]float64, prefix string) float64 {
	var d float64
	for k, v := range after {
		if strings.HasPrefix(k, prefix) {
			d += v - before[k]
		}
	}
	return d
}

// setMaxSucceeded sets the config's retention.maxSucceeded to
// -retention-max-succeeded, so that each finished FriendDeletion's
// reconcile may sweep the config's finished ones for count retention.
func (b *bench) setMaxSucceeded(ns string) error {
	ctx := context.Background()
	cfg := &snsv1alpha1.CallbackConfig{}
	if err := b.env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, cfg); err != nil {
		return err
	}
	patch := client.MergeFrom(cfg.DeepCopy())
	limit := int32(b.maxSucceeded)
	cfg.Spec.Retention.MaxSucceeded = &limit
	if err := b.env.Client.Patch(ctx, cfg, patch); err != nil {
		return fmt.Errorf("setting retention.maxSucceeded: %w", err)
	}
	fmt.Printf("retained: the config's retention.maxSucceeded is %d\n", limit)
	return b.settle()
}
