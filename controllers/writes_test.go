package controllers

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// writeCounter counts the API writes (POST, PUT, PATCH, DELETE) made
// through a rest config, by verb, resource[/subresource] and answer code:
// every client the manager builds from the config (its client, API reader,
// Event recorder) goes through it.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (w *writeCounter) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			res, err := rt.RoundTrip(req)
			if req.Method != http.MethodGet {
				code := "error"
				if err == nil {
					code = fmt.Sprint(res.StatusCode)
				}
				w.mu.Lock()
				w.counts[req.Method+" "+resourceOf(req.URL.Path)+" "+code]++
				w.mu.Unlock()
			}
			return res, err
		})
	})
	return cfg
}

// total is the number of writes whose key contains every one of parts.
func (w *writeCounter) total(parts ...string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for k, c := range w.counts {
		match := true
		for _, p := range parts {
			match = match && strings.Contains(k, p)
		}
		if match {
			n += c
		}
	}
	return n
}

func (w *writeCounter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]string, 0, len(w.counts))
	for k := range w.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %d\n", k, w.counts[k])
	}
	return b.String()
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// resourceOf is the resource (and subresource) a request path names:
// /apis/g/v/namespaces/ns/jobs/x/status is "jobs/status".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) > 0 && parts[0] == "api" {
		parts = parts[2:]
	} else if len(parts) > 2 {
		parts = parts[3:]
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return "?"
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}

// TestWritesPerDeletion counts every API write the manager makes for
// deletions run through a config with one job step and one http step (to
// a local sink), from creation to deletion at the end of retention (0s
// here): the intent with the step list, the Job's creation and its record
// (attempts 1, so that a restart never creates a deleted Job again), the
// Job's outcome together with the http attempt's claim, the attempt's
// outcome, the Job's deletion once its outcome is recorded, and the
// FriendDeletion's deletion.
// No Event: nothing went wrong.
func TestWritesPerDeletion(t *testing.T) {
	const n = 5
	ns := env.Namespace(t)
	var posts atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()

	counter := &writeCounter{counts: map[string]int{}}
	startManagerOn(t, counter.wrap(env.Config), ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"), httpStep("notify", sink.URL, 3))
	cfg.Spec.Retention.Succeeded = &metav1.Duration{Duration: 0}
	create(t, cfg)
	for i := range n {
		create(t, newFriendDeletion(ns, fmt.Sprintf("fd%d", i), "app"))
	}
	// The Job controller does not run here: the test completes each Job.
	for i := range n {
		setJobStatus(t, getJob(t, ns, fmt.Sprintf("fd%d-purge", i)), "complete")
	}
	g := gt(t)
	g.Eventually(func(g Gomega) {
		for i := range n {
			err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("fd%d", i)}, &snsv1alpha1.FriendDeletion{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "fd%d is deleted at the end of its retention: %v", i, err)
			g.Expect(jobsOf(g, ns, fmt.Sprintf("fd%d", i))).To(BeEmpty())
		}
	}).Should(Succeed())
	g.Expect(posts.Load()).To(Equal(int32(n)))
	counter.settle(g)

	perDeletion := func(parts ...string) float64 { return float64(counter.total(parts...)) / n }
	t.Logf("writes of the manager for %d deletions:\n%s", n, counter)
	t.Logf("writes per deletion: %.1f (frienddeletions/status %.1f, jobs %.1f, frienddeletions %.1f, events %.1f)",
		perDeletion(), perDeletion("frienddeletions/status"), perDeletion(" jobs "), perDeletion(" frienddeletions "), perDeletion("events"))

	// One Event only, the CallbackConfig's (Ready); none about a deletion
	// without a hitch.
	g.Expect(counter.total("events")).To(BeNumerically("<=", 1))
	for i := range n {
		g.Expect(eventsFor(g, ns, fmt.Sprintf("fd%d", i))).To(BeEmpty())
	}
	g.Expect(counter.total("POST jobs 201")).To(Equal(n))
	g.Expect(counter.total("DELETE jobs 200")).To(Equal(n), "each finished Job is deleted")
	g.Expect(counter.total("DELETE frienddeletions 200")).To(Equal(n))
	// One write per transition: the intent (step list, purge Running),
	// the Job created (attempts 1), purge Succeeded with notify's attempt
	// claimed, notify's outcome.
	g.Expect(counter.total("PATCH frienddeletions/status 200")).To(Equal(4 * n))
	// Beyond those 7 per deletion, only the config's status and Event.
	g.Expect(counter.total()).To(Equal(7*n + 2))
}

// TestWritesPerVerifiedDeletion counts the status writes of deletions
// whose config verifies pairs (spec.verify): the verification is written
// with the intent, so a deletion whose pair is gone costs what it costs
// without verification (intent, the Job created, the Job's outcome), and one whose pair is
// still a friendship one write (Succeeded, NothingToClean) and no Job.
func TestWritesPerVerifiedDeletion(t *testing.T) {
	const n = 4
	ns := env.Namespace(t)
	srv := fakeIM(t)
	counter := &writeCounter{counts: map[string]int{}}
	startManagerOn(t, counter.wrap(env.Config), ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"))
	cfg.Spec.Verify.RequestsPerSecond = 200
	cfg.Spec.Retention.Succeeded = &metav1.Duration{Duration: time.Hour}
	create(t, secret, cfg)
	for i := range n {
		srv.MakeFriends(fmt.Sprintf("friend%d", i), "bob")
		create(t, newFriendDeletion(ns, fmt.Sprintf("gone%d", i), "app"),
			newFriendDeletion(ns, fmt.Sprintf("friends%d", i), "app", snsv1alpha1.FriendPair{From: fmt.Sprintf("friend%d", i), To: "bob"}))
	}
	for i := range n {
		setJobStatus(t, getJob(t, ns, fmt.Sprintf("gone%d-purge", i)), "complete")
	}
	for i := range n {
		waitForPhase(t, ns, fmt.Sprintf("gone%d", i), snsv1alpha1.PhaseSucceeded)
		fd := waitForPhase(t, ns, fmt.Sprintf("friends%d", i), snsv1alpha1.PhaseSucceeded)
		gt(t).Expect(conditionOf(fd, "Ready").Reason).To(Equal(snsv1alpha1.ReasonNothingToClean))
	}
	g := gt(t)
	counter.settle(g)
	t.Logf("writes of the manager for %d verified deletions of each kind:\n%s", n, counter)
	g.Expect(counter.total("POST jobs 201")).To(Equal(n), "no Job for a pair still friends")
	g.Expect(counter.total("PATCH frienddeletions/status 200")).To(Equal(3*n + n))
	g.Expect(srv.Calls()).To(HaveLen(2 * n))
	g.Expect(counter.total("events")).To(Equal(n+1), "one NothingToClean Event per deletion still friends, and the config's")
}

// TestWritesPerDeletionBatched is TestWritesPerDeletion with the job step
// batched: the deletions share one Job, and each costs its own status
// writes only: joining the batch (with the step list), the Job's outcome
// with the http attempt's claim, and the attempt's outcome. The Job's
// creation, its record on the first member (attempts 1) and its deletion
// are one each for the whole batch.
func TestWritesPerDeletionBatched(t *testing.T) {
	const n = 5
	ns := env.Namespace(t)
	var posts atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()

	counter := &writeCounter{counts: map[string]int{}}
	startManagerOn(t, counter.wrap(env.Config), ns, testOptions())
	// Kept a moment, so that every member has recorded the Job's outcome
	// before the first is deleted: a Job whose members are all gone is
	// the garbage collector's, which envtest does not run.
	cfg := newConfig(ns, "app", batchJobStep("purge", n, 0, 10*time.Minute), httpStep("notify", sink.URL, 3))
	cfg.Spec.Retention.Succeeded = &metav1.Duration{Duration: 2 * time.Second}
	create(t, cfg)
	for i := range n {
		create(t, newFriendDeletion(ns, fmt.Sprintf("fd%d", i), "app"))
	}
	setJobStatus(t, getJob(t, ns, "fd0-purge"), "complete")
	g := gt(t)
	g.Eventually(func(g Gomega) {
		for i := range n {
			err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("fd%d", i)}, &snsv1alpha1.FriendDeletion{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "fd%d is deleted at the end of its retention: %v", i, err)
		}
		g.Expect(batchJobs(g, ns)).To(BeEmpty())
	}).Should(Succeed())
	g.Expect(posts.Load()).To(Equal(int32(n)))
	counter.settle(g)

	perDeletion := func(parts ...string) float64 { return float64(counter.total(parts...)) / n }
	t.Logf("writes of the manager for %d deletions:\n%s", n, counter)
	t.Logf("writes per deletion: %.1f (frienddeletions/status %.1f, jobs %.1f, frienddeletions %.1f, events %.1f)",
		perDeletion(), perDeletion("frienddeletions/status"), perDeletion(" jobs "), perDeletion(" frienddeletions "), perDeletion("events"))
	g.Expect(counter.total("events")).To(BeNumerically("<=", 1))
	g.Expect(counter.total("POST jobs 201")).To(Equal(1))
	g.Expect(counter.total("DELETE jobs 200")).To(Equal(1), "the finished Job is deleted once")
	g.Expect(counter.total("DELETE frienddeletions 200")).To(Equal(n))
	g.Expect(counter.total("PATCH frienddeletions/status 200")).To(Equal(3*n + 1))
	// Beyond those 4 per deletion, the Job's creation, record and
	// deletion, and the config's status and Event.
	g.Expect(counter.total()).To(Equal(4*n + 5))
}

// TestWritesPerDeletionWhileSendsAreFull: a deletion whose http step finds
// every send slot of its config taken writes the step before's outcome at
// once (the Job's outcome must not wait in memory while its Job may be
// deleted), and then its attempt's claim once a slot is free: one write
// more than when a slot is free at once.
func TestWritesPerDeletionWhileSendsAreFull(t *testing.T) {
	const n = 3
	ns := env.Namespace(t)
	release := make(chan struct{})
	var posts atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 1 {
			<-release // the first request holds the only slot
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // before Close, which waits for the held request

	counter := &writeCounter{counts: map[string]int{}}
	opts := testOptions()
	opts.HTTPConcurrencyPerConfig = 1
	startManagerOn(t, counter.wrap(env.Config), ns, opts)
	cfg := newConfig(ns, "app", jobStep("purge"), httpStep("notify", sink.URL, 3))
	cfg.Spec.Retention.Succeeded = &metav1.Duration{Duration: time.Hour}
	create(t, cfg)
	for i := range n {
		create(t, newFriendDeletion(ns, fmt.Sprintf("fd%d", i), "app"))
	}
	setJobStatus(t, getJob(t, ns, "fd0-purge"), "complete")
	g := gt(t)
	g.Eventually(posts.Load).Should(Equal(int32(1)), "fd0's request holds the slot")
	for i := 1; i < n; i++ {
		setJobStatus(t, getJob(t, ns, fmt.Sprintf("fd%d-purge", i)), "complete")
	}
	// The others find the slot taken until the first request is answered;
	// their Jobs' outcomes are recorded meanwhile.
	g.Eventually(func(g Gomega) {
		for i := 1; i < n; i++ {
			fd := getFD(g, ns, fmt.Sprintf("fd%d", i))
			g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
			g.Expect(stepOf(g, fd, "notify").Attempts).To(BeZero())
		}
	}).Should(Succeed())
	g.Expect(posts.Load()).To(Equal(int32(1)), "the slot is still held")
	free()
	for i := range n {
		waitForPhase(t, ns, fmt.Sprintf("fd%d", i), snsv1alpha1.PhaseSucceeded)
	}
	counter.settle(g)
	t.Logf("writes of the manager for %d deletions:\n%s", n, counter)
	// The intent, the Job created, the Job's outcome with the claim, the
	// http outcome; for each deletion that waited for the slot, the Job's
	// outcome and the claim apart.
	g.Expect(counter.total("PATCH frienddeletions/status 200")).To(Equal(4*n + n - 1))
}

// settle waits until no write has come for a while, so that anything still
// in flight is counted before the counts are read.
func (c *writeCounter) settle(g Gomega) {
	g.Consistently(func() int { return c.total() }).WithPolling(200 * time.Millisecond).Should(Equal(c.total()))
}
