package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func TestFriendDeletionStats(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }
	at := func(d time.Duration) *metav1.Time { t := ago(d); return &t }
	fd := func(ns, config string, phase snsv1alpha1.Phase, created time.Duration, completed *metav1.Time) *snsv1alpha1.FriendDeletion {
		return &snsv1alpha1.FriendDeletion{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, CreationTimestamp: ago(created)},
			Spec:       snsv1alpha1.FriendDeletionSpec{ConfigName: config},
			Status:     snsv1alpha1.FriendDeletionStatus{Phase: phase, CompletionTime: completed},
		}
	}
	shortRetention := snsv1alpha1.CallbackConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "chat", Name: "app"}}
	shortRetention.Spec.Retention.Succeeded = &metav1.Duration{Duration: time.Hour}
	idle := snsv1alpha1.CallbackConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "chat", Name: "idle"}}

	stats := frienddeletionStats([]snsv1alpha1.CallbackConfig{shortRetention, idle}, []*snsv1alpha1.FriendDeletion{
		fd("chat", "app", "", time.Minute, nil),                                     // not reconciled yet: Pending
		fd("chat", "app", snsv1alpha1.PhasePending, 5*time.Minute, nil),             // the oldest Pending
		fd("chat", "app", snsv1alpha1.PhaseRunning, 2*time.Hour, nil),               // the oldest Running
		fd("chat", "app", snsv1alpha1.PhaseSucceeded, 3*time.Hour, at(2*time.Hour)), // retention 1h: overdue
		fd("chat", "app", snsv1alpha1.PhaseSucceeded, time.Hour, at(30*time.Minute)),
		fd("chat", "app", snsv1alpha1.PhaseFailed, 3*time.Hour, at(2*time.Hour)),       // failed: default 168h
		fd("chat", "gone", snsv1alpha1.PhaseSucceeded, 48*time.Hour, at(25*time.Hour)), // config gone: default 24h, overdue
	}, now)

	for _, tc := range []struct {
		key                          configKey
		pending, running, ok, failed int
		oldestPending, oldestRunning time.Duration
		overdue                      int
	}{
		{configKey{"chat", "app"}, 2, 1, 2, 1, 5 * time.Minute, 2 * time.Hour, 1},
		{configKey{"chat", "gone"}, 0, 0, 1, 0, 0, 0, 1},
		{configKey{"chat", "idle"}, 0, 0, 0, 0, 0, 0, 0},
	} {
		s := stats[tc.key]
		if s == nil {
			t.Errorf("%v: no stats", tc.key)
			continue
		}
		got := []int{s.count[snsv1alpha1.PhasePending], s.count[snsv1alpha1.PhaseRunning], s.count[snsv1alpha1.PhaseSucceeded], s.count[snsv1alpha1.PhaseFailed], s.retentionOverdue}
		want := []int{tc.pending, tc.running, tc.ok, tc.failed, tc.overdue}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%v: pending, running, succeeded, failed, overdue = %v, want %v", tc.key, got, want)
				break
			}
		}
		if s.oldest[snsv1alpha1.PhasePending] != tc.oldestPending || s.oldest[snsv1alpha1.PhaseRunning] != tc.oldestRunning {
			t.Errorf("%v: oldest Pending %s, Running %s; want %s, %s", tc.key,
				s.oldest[snsv1alpha1.PhasePending], s.oldest[snsv1alpha1.PhaseRunning], tc.oldestPending, tc.oldestRunning)
		}
	}
	if len(stats) != 3 {
		t.Errorf("stats for %d configs, want 3", len(stats))
	}
}

// TestCollectorReadsTheStoreInPlace: with a cache of every namespace, the
// collector reads the FriendDeletion informer's store without copying an
// object, and counts what a list through the cache counts.
func TestCollectorReadsTheStoreInPlace(t *testing.T) {
	ns := env.Namespace(t)
	g := gt(t)
	create(t, newConfig(ns, "app", httpStep("notify", "http://sink.example/", 1)))
	for name, phase := range map[string]snsv1alpha1.Phase{"a": snsv1alpha1.PhaseRunning, "b": snsv1alpha1.PhaseSucceeded, "c": snsv1alpha1.PhaseSucceeded} {
		fd := newFriendDeletion(ns, name, "app")
		create(t, fd)
		fd.Status.Phase = phase
		if phase.Finished() {
			fd.Status.CompletionTime = &metav1.Time{Time: time.Now()}
		}
		g.Expect(env.Client.Status().Update(t.Context(), fd)).To(Succeed())
	}
	c, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme, ByObject: CacheByObject()})
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = c.Start(ctx) }()
	g.Expect(c.WaitForCacheSync(ctx)).To(BeTrue())

	inPlace := &frienddeletionCollector{reader: c, cache: c, clock: clock.RealClock{}}
	listed := &frienddeletionCollector{reader: c, clock: clock.RealClock{}}
	var configs snsv1alpha1.CallbackConfigList
	g.Expect(c.List(ctx, &configs, client.InNamespace(ns))).To(Succeed())
	g.Eventually(func(g Gomega) {
		now := time.Now()
		first, err := inPlace.frienddeletions(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		stats := frienddeletionStats(configs.Items, first, now)[configKey{ns, "app"}]
		g.Expect(stats.count).To(Equal(map[snsv1alpha1.Phase]int{snsv1alpha1.PhaseRunning: 1, snsv1alpha1.PhaseSucceeded: 2}))
		again, err := inPlace.frienddeletions(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(samePointers(first, again)).To(BeTrue(), "two scrapes see the same cached objects, not copies")
		viaList, err := listed.frienddeletions(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(frienddeletionStats(configs.Items, viaList, now)[configKey{ns, "app"}]).To(Equal(stats))
	}).Should(Succeed())
}

// samePointers reports whether a and b hold the same objects, by address.
func samePointers(a, b []*snsv1alpha1.FriendDeletion) bool {
	seen := make(map[*snsv1alpha1.FriendDeletion]bool, len(a))
	for _, fd := range a {
		seen[fd] = true
	}
	for _, fd := range b {
		if !seen[fd] {
			return false
		}
	}
	return len(a) == len(b) && len(a) > 0
}

// finishedBy counts a FriendDeletion only on the write that finishes it:
// not while it runs, not again on a later write of a finished one.
func TestFinishedBy(t *testing.T) {
	fd := func(phase snsv1alpha1.Phase) *snsv1alpha1.FriendDeletion {
		return &snsv1alpha1.FriendDeletion{Status: snsv1alpha1.FriendDeletionStatus{Phase: phase}}
	}
	for _, tc := range []struct {
		before, after snsv1alpha1.Phase
		want          snsv1alpha1.Phase
		ok            bool
	}{
		{"", snsv1alpha1.PhasePending, "", false},
		{snsv1alpha1.PhasePending, snsv1alpha1.PhaseRunning, "", false},
		{snsv1alpha1.PhaseRunning, snsv1alpha1.PhaseSucceeded, snsv1alpha1.PhaseSucceeded, true},
		{snsv1alpha1.PhaseRunning, snsv1alpha1.PhaseFailed, snsv1alpha1.PhaseFailed, true},
		{"", snsv1alpha1.PhaseFailed, snsv1alpha1.PhaseFailed, true}, // no config: failed at once
		{snsv1alpha1.PhaseSucceeded, snsv1alpha1.PhaseSucceeded, "", false},
		{snsv1alpha1.PhaseFailed, snsv1alpha1.PhaseFailed, "", false},
	} {
		phase, ok := finishedBy(fd(tc.before), fd(tc.after))
		if phase != tc.want || ok != tc.ok {
			t.Errorf("finishedBy(%q → %q) = %q, %v; want %q, %v", tc.before, tc.after, phase, ok, tc.want, tc.ok)
		}
	}
}

// finishedSeries returns the friend_deletion_frienddeletions_finished_total
// series of namespace ns, as config/phase → value, without creating any.
func finishedSeries(t *testing.T, ns string) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1024)
	finishedTotal.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		l := map[string]string{}
		for _, p := range pb.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["namespace"] == ns {
			out[l["config"]+"/"+l["phase"]] = pb.GetCounter().GetValue()
		}
	}
	return out
}

// TestFinishedCounter: each FriendDeletion the controllers finish is
// counted once under its config and phase, a deletion whose config does not
// exist included; a config with nothing finished reports zeros once
// scraped.
func TestFinishedCounter(t *testing.T) {
	ns := env.Namespace(t)
	g := gt(t)
	srv := newRecordingServer(t, 204)
	failing := newRecordingServer(t, 500)
	mgr := startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", httpStep("notify", srv.URL, 1)), newConfig(ns, "flaky", httpStep("notify", failing.URL, 1)),
		newConfig(ns, "idle", httpStep("notify", srv.URL, 1)))
	create(t, newFriendDeletion(ns, "ok1", "app"), newFriendDeletion(ns, "ok2", "app"),
		newFriendDeletion(ns, "bad", "flaky"), newFriendDeletion(ns, "lost", "missing"))
	waitForPhase(t, ns, "ok1", snsv1alpha1.PhaseSucceeded)
	waitForPhase(t, ns, "ok2", snsv1alpha1.PhaseSucceeded)
	waitForPhase(t, ns, "bad", snsv1alpha1.PhaseFailed)
	waitForPhase(t, ns, "lost", snsv1alpha1.PhaseFailed)
	// The phase read back is the API server's; the counter moves right
	// after the write is answered.
	g.Eventually(func() map[string]float64 { return finishedSeries(t, ns) }).Should(Equal(map[string]float64{
		"app/Succeeded": 2, "flaky/Failed": 1, "missing/Failed": 1,
	}))

	// A scrape gives every config its series, from zero.
	c := &frienddeletionCollector{reader: mgr.GetClient(), clock: clock.RealClock{}}
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	for range ch {
	}
	g.Expect(finishedSeries(t, ns)).To(Equal(map[string]float64{
		"app/Succeeded": 2, "app/Failed": 0, "flaky/Succeeded": 0, "flaky/Failed": 1,
		"idle/Succeeded": 0, "idle/Failed": 0, "missing/Succeeded": 0, "missing/Failed": 1,
	}))
}
