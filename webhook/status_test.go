package webhook

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// newFlusher is a status flusher for h's counters, with a test's interval.
func (h *harness) newFlusher(interval time.Duration) *statusFlusher {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		h.t.Fatal(err)
	}
	return &statusFlusher{
		counters: h.recv.counters,
		cached:   h.mgr.GetClient(),
		direct:   h.env.Client,
		writer:   h.env.Client,
		interval: interval,
		metrics:  m,
		log:      h.logs.logger(),
	}
}

// reconciled sets the status fields the CallbackConfig reconciler owns, and
// waits for the cache to see them.
func (h *harness) reconciled(cfg *snsv1alpha1.CallbackConfig) {
	h.t.Helper()
	cfg.Status.ObservedGeneration = cfg.Generation
	cfg.Status.WebhookPath = Path(cfg.Namespace, cfg.Name)
	cfg.Status.Conditions = []metav1.Condition{{
		Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: snsv1alpha1.ReasonConfigured,
		Message: "ready", LastTransitionTime: metav1.Now(), ObservedGeneration: cfg.Generation,
	}}
	if err := h.env.Client.Status().Update(h.t.Context(), cfg); err != nil {
		h.t.Fatal(err)
	}
	h.waitCached(cfg, &snsv1alpha1.CallbackConfig{})
}

func (h *harness) status(name string) snsv1alpha1.CallbackConfigStatus {
	h.t.Helper()
	cfg := &snsv1alpha1.CallbackConfig{}
	if err := h.env.Client.Get(h.t.Context(), key(h.ns, name), cfg); err != nil {
		h.t.Fatal(err)
	}
	return cfg.Status
}

// TestStatusCountersAreWrittenInOneBatch answers seven callbacks and checks
// that one flush writes their counts in a single status update, leaving the
// reconciler's fields alone.
func TestStatusCountersAreWrittenInOneBatch(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	cfg := h.config("plain", nil)
	h.reconciled(cfg)
	before := cfg.ResourceVersion

	for _, from := range []string{"a", "b", "c", "d"} {
		expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody(from, "x")}))
	}
	for range 3 {
		r := h.do(call{path: Path(h.ns, "plain"), query: query("SdkAppid", "1"), body: pairsBody("a", "x")})
		g.Expect(r.status).To(Equal(403))
	}
	g.Expect(h.status("plain").AcceptedCallbacks).To(BeZero(), "no status write per callback")

	h.newFlusher(time.Hour).flush(t.Context())

	st := h.status("plain")
	g.Expect(st.AcceptedCallbacks).To(Equal(int64(4)))
	g.Expect(st.RejectedCallbacks).To(Equal(int64(3)))
	g.Expect(st.LastCallbackTime).NotTo(BeNil())
	g.Expect(st.LastCallbackTime.Time.Equal(fixedNow)).To(BeTrue(), "lastCallbackTime %s", st.LastCallbackTime)
	g.Expect(st.WebhookPath).To(Equal(Path(h.ns, "plain")))
	g.Expect(st.Conditions).To(HaveLen(1))
	g.Expect(st.ObservedGeneration).To(Equal(cfg.Generation))

	// Replay the config's history since before the callbacks: one update.
	var current snsv1alpha1.CallbackConfig
	g.Expect(h.env.Client.Get(t.Context(), key(h.ns, "plain"), &current)).To(Succeed())
	g.Expect(updatesBetween(t, h, "plain", before, current.ResourceVersion)).To(Equal(1))

	// Nothing new counted: the next flush writes nothing.
	h.newFlusher(time.Hour).flush(t.Context())
	var after snsv1alpha1.CallbackConfig
	g.Expect(h.env.Client.Get(t.Context(), key(h.ns, "plain"), &after)).To(Succeed())
	g.Expect(after.ResourceVersion).To(Equal(current.ResourceVersion))
}

// updatesBetween counts the modifications of a CallbackConfig after
// resourceVersion from up to resourceVersion to, by watching from from.
func updatesBetween(t *testing.T, h *harness, name, from, to string) int {
	t.Helper()
	wc, err := client.NewWithWatch(h.env.Config, client.Options{Scheme: h.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	w, err := wc.Watch(ctx, &snsv1alpha1.CallbackConfigList{}, client.InNamespace(h.ns),
		&client.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name), Raw: &metav1.ListOptions{ResourceVersion: from}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	n := 0
	for ev := range w.ResultChan() {
		if ev.Type != watch.Modified {
			continue
		}
		n++
		if ev.Object.(*snsv1alpha1.CallbackConfig).ResourceVersion == to {
			return n
		}
	}
	t.Fatal("the watch ended before reaching the last update")
	return 0
}

// TestStatusCountersFromSeveralReplicas has three replicas' flushers add
// their counts to the same config at the same time: none is lost.
func TestStatusCountersFromSeveralReplicas(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.reconciled(h.config("plain", nil))
	k := key(h.ns, "plain")

	const replicas, rounds = 3, 4
	var wg sync.WaitGroup
	for r := range replicas {
		f := h.newFlusher(time.Hour)
		f.counters = newCounters()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				for range r + 1 {
					f.counters.record(k, true, fixedNow.Add(time.Duration(r*10+i)*time.Second))
				}
				f.counters.record(k, false, fixedNow)
				f.flush(context.Background())
			}
			// Counts that met too many conflicts are kept for the next flush.
			for attempt := 0; f.counters.size() > 0; attempt++ {
				if attempt == 10 {
					t.Error("counts left unwritten after 10 more flushes")
					return
				}
				f.flush(context.Background())
			}
		}()
	}
	wg.Wait()

	st := h.status("plain")
	g.Expect(st.AcceptedCallbacks).To(Equal(int64(rounds * (1 + 2 + 3))))
	g.Expect(st.RejectedCallbacks).To(Equal(int64(rounds * replicas)))
	g.Expect(st.LastCallbackTime.Time.Equal(fixedNow.Add(23*time.Second))).To(BeTrue(), "lastCallbackTime %s", st.LastCallbackTime)
	g.Expect(st.Conditions).To(HaveLen(1))
}

// TestStatusFlusherRunsAndFlushesOnStop runs the flusher as the manager
// does: it writes every interval, and once more when stopped.
func TestStatusFlusherRunsAndFlushesOnStop(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.reconciled(h.config("plain", nil))
	f := h.newFlusher(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Start(ctx) }()

	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody("a", "b")}))
	g.Eventually(func() int64 { return h.status("plain").AcceptedCallbacks }).
		WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Equal(int64(1)))

	h.recv.counters.record(key(h.ns, "plain"), false, fixedNow)
	cancel()
	g.Expect(<-done).To(Succeed())
	g.Expect(h.status("plain").RejectedCallbacks).To(Equal(int64(1)))
}

func (c *counters) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
