package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// The drills of issue 11: the receiver keeps every callback it answers OK
// through API server outages, crashes and rolling restarts. Each runs the
// receiver as the operator does (setup, or a whole process), against the
// package's kube-apiserver, over real sockets.

// imBackendWait is how long the IM backend waits for an answer; an answer
// later than that is a failed callback from its side.
const imBackendWait = 2 * time.Second

// proxiedConfig is env's config with every connection going through proxy.
func proxiedConfig(t *testing.T, e *testenv.Env, proxy *faultProxy) *rest.Config {
	t.Helper()
	cfg := rest.CopyConfig(e.Config)
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = proxy.addr
	cfg.Host = u.String()
	return cfg
}

// upstreamAddr is the host:port of env's kube-apiserver.
func upstreamAddr(t *testing.T, e *testenv.Env) string {
	t.Helper()
	u, err := url.Parse(e.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// drillReceiver is a manager with the receiver set up as the operator sets
// it up, whose every connection to the API server may go through a proxy.
type drillReceiver struct {
	t        *testing.T
	mgr      ctrl.Manager
	parts    *parts
	registry *prometheus.Registry
	base     string
	cancel   context.CancelFunc
	stopped  chan struct{}
}

func drillOptions(t *testing.T) Options {
	o := DefaultOptions()
	o.BindAddress = "127.0.0.1:0"
	o.SpoolDir = t.TempDir()
	o.ReplicaName = "drill-0"
	o.StatusFlushInterval = 200 * time.Millisecond
	o.ShutdownDelay = 0
	return o
}

func startDrillReceiver(t *testing.T, cfg *rest.Config, opts Options) *drillReceiver {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 testLogs,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := setup(mgr, opts, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &drillReceiver{t: t, mgr: mgr, parts: p, registry: reg, cancel: cancel, stopped: make(chan struct{})}
	go func() {
		defer close(d.stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("drill manager: %v", err)
		}
	}()
	t.Cleanup(d.stop)
	NewWithT(t).Eventually(func() error { return p.ReadyCheck(nil) }).
		WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).Should(Succeed())
	d.base = "http://" + p.server.Addr().String()
	return d
}

// stop stops the manager as SIGTERM would and waits for it.
func (d *drillReceiver) stop() {
	d.cancel()
	<-d.stopped
}

// load sends callbacks, each with its own request id, at a steady rate,
// each from its own goroutine as the IM backend does, and keeps every
// answer.
type load struct {
	t      *testing.T
	send   func(id string) (reply, error)
	mu     sync.Mutex
	sent   []string
	ok     map[string]bool
	failed []string
	// answeredFail are the failed ones that got an HTTP answer (FAIL or
	// another status), not a transport error.
	answeredFail []string
	// slowest is the longest a callback waited for its answer.
	slowest time.Duration
	stop    chan struct{}
	wg      sync.WaitGroup
	seq     atomic.Int64
}

func startLoad(t *testing.T, perSecond int, send func(id string) (reply, error)) *load {
	l := &load{t: t, send: send, ok: map[string]bool{}, stop: make(chan struct{})}
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	l.wg.Go(func() {
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("cb-%06d", l.seq.Add(1))
			l.wg.Go(func() { l.one(id) })
		}
	})
	return l
}

func (l *load) one(id string) {
	start := time.Now()
	r, err := l.send(id)
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowest = max(l.slowest, took)
	l.sent = append(l.sent, id)
	switch {
	case err != nil:
		l.failed = append(l.failed, fmt.Sprintf("%s: %v", id, err))
	case r.status != http.StatusOK || r.raw != okAnswer:
		l.failed = append(l.failed, fmt.Sprintf("%s: %d %s", id, r.status, r.raw))
		l.answeredFail = append(l.answeredFail, l.failed[len(l.failed)-1])
	default:
		l.ok[id] = true
	}
}

// finish stops sending and waits for every answer.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// okCount is how many callbacks were answered OK so far.
func (l *load) okCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ok)
}

// imBackend is an HTTP client for the drills. It waits longer than the IM
// backend does, so that a machine short of CPU cannot turn a drill into a
// timing test: the receiver's own budget (--receiver-write-timeout, 1.5 s)
// is what keeps answers within the IM backend's wait, and each drill logs
// its slowest answer against imBackendWait.
func imBackend() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 15 * imBackendWait}
}

// logSlowest reports the drill's slowest answer beside the IM backend's
// wait.
func (l *load) logSlowest() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("slowest answer %s of %d callbacks (the IM backend waits %s)", l.slowest.Round(time.Millisecond), len(l.sent), imBackendWait)
}

// callbackSender sends one unsigned callback with a request id to base.
func callbackSender(hc *http.Client, base func() string, ns string) func(id string) (reply, error) {
	return func(id string) (reply, error) {
		u := base() + Path(ns, "plain") + "?" + query("RequestId", id).Encode()
		req, err := http.NewRequest(http.MethodPost, u, stringsReader(pairsBody("user-"+id, "friend")))
		if err != nil {
			return reply{}, err
		}
		return sendRequest(hc, req)
	}
}

// expectStoredOnce waits until every id in ok is a FriendDeletion in ns,
// and checks that none is there twice.
func expectStoredOnce(t *testing.T, ns string, ok map[string]bool, within time.Duration) {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		seen := map[string]int{}
		for _, fd := range listDeletions(t, env.Client, ns) {
			seen[fd.Spec.RequestID]++
		}
		var missing, twice []string
		for id := range ok {
			if seen[id] == 0 {
				missing = append(missing, id)
			}
		}
		for id, n := range seen {
			if n > 1 {
				twice = append(twice, id)
			}
		}
		sort.Strings(missing)
		g.Expect(twice).To(BeEmpty(), "stored twice")
		g.Expect(missing).To(BeEmpty(), "answered OK, not stored")
	}).WithTimeout(within).WithPolling(250 * time.Millisecond).Should(Succeed())
}

// TestDrillAPIServerUnreachable cuts the receiver's connection to the API
// server for 10 s with refused connections, then 10 s with a black hole,
// while callbacks arrive at 10/s to a config without authentication and at
// 5/s to one with it (whose token the receiver keeps checking with what the
// API server said last). Every callback is answered OK, none ran out of
// its budget (no StoreTimeout or SpoolFailed), and every one is a
// FriendDeletion, once, within 60 s of the connection's return. The
// slowest answer is logged, not asserted.
func TestDrillAPIServerUnreachable(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	proxy := newFaultProxy(t, upstreamAddr(t, env))
	d := startDrillReceiver(t, proxiedConfig(t, env, proxy), drillOptions(t))
	h := &harness{t: t, env: env, mgr: d.mgr, ns: env.Namespace(t)}
	h.config("plain", nil)
	g.Expect(env.Client.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "im-token"},
		Data:       map[string][]byte{"token": []byte(vectorToken)},
	})).To(Succeed())
	h.config("signed", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}}
	})
	hc := imBackend()
	signedSend := func(id string) (reply, error) {
		q := signed(query("RequestId", "signed-"+id), vectorToken, strconv.FormatInt(time.Now().Unix(), 10))
		req, err := http.NewRequest(http.MethodPost, d.base+Path(h.ns, "signed")+"?"+q.Encode(), stringsReader(pairsBody("user-"+id, "friend")))
		if err != nil {
			return reply{}, err
		}
		return sendRequest(hc, req)
	}

	l := startLoad(t, 10, callbackSender(hc, func() string { return d.base }, h.ns))
	ls := startLoad(t, 5, signedSend)
	g.Eventually(l.okCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(BeNumerically(">=", 10))
	g.Eventually(ls.okCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(BeNumerically(">=", 5))
	proxy.refuse()
	time.Sleep(10 * time.Second) // the outage under test
	proxy.blackHole()
	time.Sleep(10 * time.Second)
	proxy.heal()
	healedAt := time.Now()
	healed := l.okCount()
	g.Eventually(l.okCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(BeNumerically(">=", healed+10))
	l.finish()
	ls.finish()

	l.logSlowest()
	ls.logSlowest()
	g.Expect(l.failed).To(BeEmpty(), "callbacks not answered OK")
	g.Expect(l.ok).To(HaveLen(len(l.sent)))
	g.Expect(ls.failed).To(BeEmpty(), "signed callbacks not answered OK")
	g.Expect(ls.ok).To(HaveLen(len(ls.sent)))
	for id := range ls.ok {
		l.ok["signed-"+id] = true
	}
	// The answer within the IM backend's wait rests on the budget, not on
	// this machine's speed: keep answers 503 StoreTimeout or SpoolFailed
	// at the budget's end (TestKeepAnswersAtTheDeadlineWhenCreateAndSpoolHang),
	// so none of those means every callback beat the deadline.
	for _, config := range []string{"plain", "signed"} {
		for _, reason := range []string{ReasonStoreTimeout, ReasonSpoolFailed} {
			g.Expect(testutil.ToFloat64(d.parts.metrics.callbacks.WithLabelValues(h.ns, config, "FAIL", reason))).To(BeZero(),
				"callbacks to %s answered FAIL %s: the budget ran out", config, reason)
		}
	}
	spooled := testutil.ToFloat64(d.parts.metrics.spoolWrites.WithLabelValues(spoolWriteSpooled))
	g.Expect(spooled).To(BeNumerically(">=", 150), "the outage's callbacks went to the spool")
	// Within 60 s of the connection's return.
	expectStoredOnce(t, h.ns, l.ok, time.Minute-time.Since(healedAt))
	g.Eventually(func() float64 { return testutil.ToFloat64(d.parts.metrics.spoolEntries) }).
		WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(BeZero())
	g.Expect(testutil.ToFloat64(d.parts.metrics.replays)).To(BeNumerically(">", 0))
	t.Logf("%d callbacks sent, %d answered OK, %.0f spooled, %.0f replayed", len(l.sent)+len(ls.sent), len(l.ok), spooled, testutil.ToFloat64(d.parts.metrics.replays))
}

// TestDrillSpoolFull fills a small spool while the API server is
// unreachable: the callback that does not fit is answered 503 FAIL and
// counted, the spool stays sound, and once the API server is back the
// spool is replayed and callbacks are stored again.
func TestDrillSpoolFull(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	proxy := newFaultProxy(t, upstreamAddr(t, env))
	opts := drillOptions(t)
	opts.SpoolAfter = 300 * time.Millisecond
	opts.SpoolMaxBytes = 4 << 10 // a few entries
	d := startDrillReceiver(t, proxiedConfig(t, env, proxy), opts)
	h := &harness{t: t, env: env, mgr: d.mgr, ns: env.Namespace(t)}
	h.config("plain", nil)
	send := callbackSender(imBackend(), func() string { return d.base }, h.ns)

	proxy.refuse()
	ok := map[string]bool{}
	var full reply
	for i := 0; ; i++ {
		g.Expect(i).To(BeNumerically("<", 100), "the spool never filled")
		id := fmt.Sprintf("cb-%03d", i)
		r, err := send(id)
		g.Expect(err).NotTo(HaveOccurred())
		if r.status != http.StatusOK {
			full = r
			break
		}
		ok[id] = true
	}
	g.Expect(full.status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(full.answer.ActionStatus).To(Equal("FAIL"))
	g.Expect(full.answer.ErrorInfo).To(Equal("the FriendDeletion could not be stored and the spool is full"))
	g.Expect(testutil.ToFloat64(d.parts.metrics.spoolWrites.WithLabelValues(spoolWriteFull))).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(d.parts.metrics.callbacks.WithLabelValues(h.ns, "plain", "FAIL", ReasonSpoolFull))).To(Equal(1.0))
	// A redelivery of a spooled callback is still answered OK, once.
	r, err := send("cb-000")
	g.Expect(err).NotTo(HaveOccurred())
	expectOK(t, r)
	g.Expect(testutil.ToFloat64(d.parts.metrics.spoolWrites.WithLabelValues(spoolWriteDuplicate))).To(Equal(1.0))

	proxy.heal()
	expectStoredOnce(t, h.ns, ok, time.Minute)
	g.Eventually(func() float64 { return testutil.ToFloat64(d.parts.metrics.spoolEntries) }).
		WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(BeZero())
	r, err = send("after")
	g.Expect(err).NotTo(HaveOccurred())
	expectOK(t, r)
	g.Expect(h.deletions()).To(HaveLen(len(ok)+1), "the callback that found the spool full was not stored")

	d.stop()
	checkSpoolFile(t, opts.SpoolDir)
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// TestDrillAPIServerBackDuringShutdown spools callbacks while the API server
// is unreachable, stops the receiver as SIGTERM does, and brings the API
// server back while the receiver still serves its shutdown delay: the
// replayer's last attempt, once the server has answered its last callback,
// stores every spooled callback, once, and the receiver exits with its
// spool empty.
func TestDrillAPIServerBackDuringShutdown(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	proxy := newFaultProxy(t, upstreamAddr(t, env))
	opts := drillOptions(t)
	opts.ShutdownDelay = 2 * time.Second
	d := startDrillReceiver(t, proxiedConfig(t, env, proxy), opts)
	h := &harness{t: t, env: env, mgr: d.mgr, ns: env.Namespace(t)}
	h.config("plain", nil)
	send := callbackSender(imBackend(), func() string { return d.base }, h.ns)
	warmUp(t, send, "warm-up")

	proxy.refuse()
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("cb-%03d", i))
	}
	ok := expectAllOK(t, send, ids, "while the API server is unreachable")
	ok["warm-up"] = true
	g.Expect(d.parts.replayer.spool.snapshot().entries).To(Equal(20))

	d.cancel()
	g.Eventually(func() error { return d.parts.ReadyCheck(nil) }).WithTimeout(time.Minute).WithPolling(10*time.Millisecond).
		Should(HaveOccurred(), "readiness fails as soon as the receiver is told to stop")
	proxy.heal()
	<-d.stopped

	g.Expect(testutil.ToFloat64(d.parts.metrics.replays)).To(Equal(20.0))
	checkSpoolFile(t, opts.SpoolDir)
	g.Expect(spooledRequestIDs(t, opts.SpoolDir)).To(BeEmpty(), "the receiver left callbacks in its spool although the API server was back")
	expectStoredOnce(t, h.ns, ok, time.Minute)
	g.Expect(h.deletions()).To(HaveLen(len(ok)))
}

// sendAll sends a callback for each id, all at once, and returns the
// answers.
func sendAll(t *testing.T, send func(id string) (reply, error), ids []string) map[string]reply {
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]reply{}
	for _, id := range ids {
		wg.Go(func() {
			r, err := send(id)
			if err != nil {
				t.Errorf("callback %s: %v", id, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			got[id] = r
		})
	}
	wg.Wait()
	return got
}

// expectAllOK sends the callbacks at once and reports those answered OK;
// any other answer fails the test, saying when it was sent.
func expectAllOK(t *testing.T, send func(id string) (reply, error), ids []string, when string) map[string]bool {
	t.Helper()
	ok := map[string]bool{}
	for id, r := range sendAll(t, send, ids) {
		if r.raw != okAnswer {
			t.Errorf("callback %s %s: %+v", id, when, r)
			continue
		}
		ok[id] = true
	}
	return ok
}
