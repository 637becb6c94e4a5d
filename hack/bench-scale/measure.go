package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// result is one config's figures.
type result struct {
	config string
	err    error

	sent, ok, fail, late int64
	sendTook             time.Duration
	failReasons          map[string]int

	succeeded, failed int
	// elapsed runs from the first callback sent to the last FriendDeletion
	// seen finished.
	elapsed    time.Duration
	incomplete bool

	writes    writes
	stored    []stored
	etcdDelta etcdSizes
	hwm       map[string]int64
	sinkReqs  int64
	sinkKeys  int
	load      string
}

// deletions is the number of FriendDeletions the figures are divided by:
// the callbacks answered OK.
func (r *result) deletions() float64 { return float64(r.ok) }

// rate is end-to-end deletions/s: Succeeded ones over the time from the
// first callback to the last seen finished.
func (r *result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.succeeded) / r.elapsed.Seconds()
}

func (r *result) writesPerDeletion() float64 { return r.writes.total(false) / r.deletions() }

func (r *result) storedPerDeletion() float64 {
	var t int64
	for _, s := range r.stored {
		t += s.bytes
	}
	return float64(t) / r.deletions()
}

// measure sends the callbacks, follows the FriendDeletions to the end,
// waits for the cluster to be quiet and takes the figures.
func (s *scenario) measure(ctx context.Context) (*result, error) {
	if err := s.watchFriendDeletions(ctx); err != nil {
		return nil, err
	}
	before, err := objectNames(ctx, s.local.Config)
	if err != nil {
		return nil, err
	}
	writesBefore, err := scrapeWrites(ctx, s.cs)
	if err != nil {
		return nil, err
	}
	etcdBefore, err := scrapeEtcd(ctx, s.local.EtcdURL())
	if err != nil {
		return nil, err
	}

	s.logf("sending %d callbacks at %g/s through the receiver at %s", s.f.n, s.f.rate, s.recvURL)
	st := &sendStats{first: time.Now()}
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		newSender(s.recvURL, s.f.concurrency).burst(ctx, s.f.n, s.f.rate, s.f.concurrency, st)
	}()

	res := &result{config: s.name}
	deadline := time.Now().Add(s.f.timeout)
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	check := time.NewTicker(250 * time.Millisecond)
	defer check.Stop()
	sending := true
wait:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sendDone:
			sendDone = nil
			sending = false
			s.logf("all %d callbacks answered in %s: %d OK, %d FAIL", st.sent.Load(), st.last.Sub(st.first).Round(time.Millisecond), st.ok.Load(), st.fail.Load())
		case <-progress.C:
			s.printProgress(ctx, st, writesBefore)
		case <-check.C:
			if err := s.processAlive(); err != nil {
				return nil, err
			}
			if _, finished, _ := s.counts(); !sending && int64(finished) >= st.ok.Load() {
				break wait
			}
			if time.Now().After(deadline) {
				s.logf("TIMEOUT: not every FriendDeletion finished within -timeout %s; the figures cover those that did", s.f.timeout)
				res.incomplete = true
				if sending {
					return nil, fmt.Errorf("callbacks still being sent after -timeout %s", s.f.timeout)
				}
				break wait
			}
		}
	}
	byPhase, _, last := s.counts()
	res.sent, res.ok, res.fail, res.late = st.sent.Load(), st.ok.Load(), st.fail.Load(), st.late.Load()
	res.sendTook = st.last.Sub(st.first)
	res.failReasons = st.reasons
	res.succeeded, res.failed = byPhase[snsv1alpha1.PhaseSucceeded], byPhase[snsv1alpha1.PhaseFailed]
	if res.ok == 0 {
		return nil, fmt.Errorf("no callback was answered OK: %v", st.reasons)
	}
	res.elapsed = last.Sub(st.first)
	s.logf("%d FriendDeletions finished (%d Succeeded, %d Failed) %s after the first callback: %.2f deletions/s",
		res.succeeded+res.failed, res.succeeded, res.failed, res.elapsed.Round(time.Millisecond), res.rate())

	if err := s.settle(ctx, writesBefore); err != nil {
		return nil, err
	}
	writesAfter, err := scrapeWrites(ctx, s.cs)
	if err != nil {
		return nil, err
	}
	res.writes = writesAfter.since(writesBefore)
	etcdAfter, err := scrapeEtcd(ctx, s.local.EtcdURL())
	if err != nil {
		return nil, err
	}
	res.etcdDelta = etcdSizes{total: etcdAfter.total - etcdBefore.total, inUse: etcdAfter.inUse - etcdBefore.inUse}
	s.logf("summing the objects left in namespace %s", namespace)
	if res.stored, err = storedObjects(ctx, s.local.Config, before); err != nil {
		return nil, err
	}
	res.hwm = map[string]int64{}
	for name, p := range s.procs {
		res.hwm[name] = statusBytes(p.Pid(), "VmHWM:")
	}
	res.sinkReqs, res.sinkKeys = s.sink.requests.Load(), s.sink.distinct()
	res.load = loadAvg()
	return res, nil
}

// settle waits until the finished Jobs and their Pods are gone, then until
// no write has happened for -quiet (leases and node heartbeats aside), so
// that the write count holds everything the deletions caused.
func (s *scenario) settle(ctx context.Context, writesBefore writes) error {
	s.logf("waiting for the finished Jobs and their Pods to be deleted")
	if err := poll(ctx, 3*time.Minute, "the Jobs and Pods to be deleted", func() error {
		if err := s.processAlive(); err != nil {
			return err
		}
		jobs, err := s.objectCount(ctx, "jobs")
		if err != nil {
			return err
		}
		pods, err := s.objectCount(ctx, "pods")
		if err != nil {
			return err
		}
		if jobs+pods > 0 {
			return fmt.Errorf("%d Jobs and %d Pods left", jobs, pods)
		}
		return nil
	}); err != nil {
		return err
	}
	s.logf("waiting until no write happens for %s", s.f.quiet)
	var last float64 = -1
	quietSince := time.Now()
	timeout := time.Now().Add(3 * time.Minute)
	for {
		w, err := scrapeWrites(ctx, s.cs)
		if err != nil {
			return err
		}
		total := w.since(writesBefore).total(false)
		if total != last {
			last, quietSince = total, time.Now()
		} else if time.Since(quietSince) >= s.f.quiet {
			return nil
		}
		if time.Now().After(timeout) {
			return errors.New("the cluster kept writing for 3 minutes after every FriendDeletion finished and its Jobs were gone")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// printProgress prints one line of where the run stands.
func (s *scenario) printProgress(ctx context.Context, st *sendStats, writesBefore writes) {
	byPhase, finished, _ := s.counts()
	jobs, _ := s.objectCount(ctx, "jobs")
	pods, _ := s.objectCount(ctx, "pods")
	w := "?"
	if now, err := scrapeWrites(ctx, s.cs); err == nil {
		w = strconv.FormatFloat(now.since(writesBefore).total(false), 'f', 0, 64)
	}
	s.logf("%s: sent %d/%d (OK %d, FAIL %d) | FriendDeletions Pending %d, Running %d, Succeeded %d, Failed %d (finished %d of %d) | Jobs %d, Pods %d | http sink %d | writes %s | load %s",
		time.Since(st.first).Round(time.Second), st.sent.Load(), s.f.n, st.ok.Load(), st.fail.Load(),
		byPhase[snsv1alpha1.PhasePending]+byPhase[""], byPhase[snsv1alpha1.PhaseRunning], byPhase[snsv1alpha1.PhaseSucceeded], byPhase[snsv1alpha1.PhaseFailed],
		finished, st.ok.Load(), jobs, pods, s.sink.requests.Load(), w, loadAvg())
}

// statusBytes reads a "<key> <n> kB" line of /proc/<pid>/status, in bytes.
func statusBytes(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
