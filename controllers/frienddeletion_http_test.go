package controllers

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// recorder is a local HTTP server that answers each POST with the next
// status code of a script (the last one repeats) and keeps what it got.
type recordingServer struct {
	*httptest.Server
	mu        sync.Mutex
	codes     []int
	requests  []*http.Request
	bodies    []httpStepBody
	succeeded int
}

func newRecordingServer(t *testing.T, codes ...int) *recordingServer {
	s := &recordingServer{codes: codes}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body httpStepBody
		_ = json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		defer s.mu.Unlock()
		code := s.codes[min(len(s.requests), len(s.codes)-1)]
		s.requests = append(s.requests, r)
		s.bodies = append(s.bodies, body)
		if code/100 == 2 {
			s.succeeded++
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte("answer from test server"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *recordingServer) count() (all, succeeded int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests), s.succeeded
}

func TestHTTPStepFailsTwiceThenSucceeds(t *testing.T) {
	ns := env.Namespace(t)
	srv := newRecordingServer(t, 503, 500, 204)
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook-headers"},
		StringData: map[string]string{"Authorization": "Bearer s3cret", "X-Team": "im"},
	})
	step := httpStep("notify", srv.URL+"/hooks/friend-deleted?token=abc", 5)
	step.HTTP.HeadersSecretRef = &snsv1alpha1.SecretRef{Name: "hook-headers"}
	startManager(t, ns, testOptions())
	fdObj := newFriendDeletion(ns, "fd1", "app")
	create(t, newConfig(ns, "app", step), fdObj)

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g := gt(t)
	st := stepOf(g, fd, "notify")
	g.Expect(st.Attempts).To(Equal(int32(3)))
	g.Expect(st.Request).To(Equal("POST " + srv.URL + "/hooks/friend-deleted"))
	g.Expect(st.Message).To(Equal("Attempt 3 of 5 succeeded."))
	g.Expect(st.NextAttemptTime).To(BeNil())
	g.Expect(conditionOf(fd, "Ready").Status).To(Equal(metav1.ConditionTrue))

	all, ok := srv.count()
	g.Expect(all).To(Equal(3))
	g.Expect(ok).To(Equal(1))
	for i, r := range srv.requests {
		g.Expect(r.Method).To(Equal(http.MethodPost))
		g.Expect(r.Header.Get("Idempotency-Key")).To(Equal(string(fd.UID)+"/notify"), "attempt %d", i+1)
		g.Expect(r.Header.Get("Authorization")).To(Equal("Bearer s3cret"))
		g.Expect(r.Header.Get("X-Team")).To(Equal("im"))
		g.Expect(r.Header.Get("Content-Type")).To(Equal("application/json"))
	}
	g.Expect(srv.bodies[2]).To(Equal(httpStepBody{
		Name: "fd1", Namespace: ns, SDKAppID: "1400000001",
		Pairs:    []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}},
		ClientIP: "203.0.113.7", OptPlatform: "RESTAPI",
	}))
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElements("StepRetrying", "StepSucceeded", "Succeeded"))
	g.Expect(eventsFor(g, ns, "fd1")).NotTo(ContainElement("StepRunning"), "a step starting is no news")
}

func TestHTTPStepAlwaysFailing(t *testing.T) {
	ns := env.Namespace(t)
	srv := newRecordingServer(t, 500)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", httpStep("notify", srv.URL, 3)), newFriendDeletion(ns, "fd1", "app"))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	st := stepOf(g, fd, "notify")
	g.Expect(st.Attempts).To(Equal(int32(3)))
	g.Expect(st.Message).To(Equal("Attempt 3 of 3 failed: POST returned 500 Internal Server Error: answer from test server"))
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(HaveField("Reason", snsv1alpha1.ReasonFailed), HaveField("Message", ContainSubstring("500 Internal Server Error"))))
	all, _ := srv.count()
	g.Expect(all).To(Equal(3))
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElements("StepRetrying", "StepFailed", "Failed"))
}

func TestHTTPStepMissingHeadersSecretIsRetriedThenFails(t *testing.T) {
	ns := env.Namespace(t)
	srv := newRecordingServer(t, 200)
	step := httpStep("notify", srv.URL, 2)
	step.HTTP.HeadersSecretRef = &snsv1alpha1.SecretRef{Name: "missing"}
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", step), newFriendDeletion(ns, "fd1", "app"))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	g.Expect(stepOf(g, fd, "notify").Message).To(ContainSubstring(`headers Secret "missing" not found`))
	all, _ := srv.count()
	g.Expect(all).To(BeZero())
}

// TestHTTPStepRedirectIsNotFollowed answers every POST with a redirect to
// another server: no redirect is followed (the headers Secret never reaches
// the other host, and a 302/303 never becomes a GET that succeeds), and the
// step fails at once.
func TestHTTPStepRedirectIsNotFollowed(t *testing.T) {
	ns := env.Namespace(t)
	target := newRecordingServer(t, 200)
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook-headers"},
		StringData: map[string]string{"Authorization": "Bearer s3cret"},
	})
	startManager(t, ns, testOptions())
	codes := []int{http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect}
	for _, code := range codes {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/moved", code)
		}))
		t.Cleanup(redirector.Close)
		name := fmt.Sprintf("app-%d", code)
		step := httpStep("notify", redirector.URL, 5)
		step.HTTP.HeadersSecretRef = &snsv1alpha1.SecretRef{Name: "hook-headers"}
		create(t, newConfig(ns, name, step), newFriendDeletion(ns, fmt.Sprintf("fd-%d", code), name))
	}
	g := gt(t)
	for _, code := range codes {
		fd := waitForPhase(t, ns, fmt.Sprintf("fd-%d", code), snsv1alpha1.PhaseFailed)
		st := stepOf(g, fd, "notify")
		g.Expect(st.Attempts).To(Equal(int32(1)), "a redirect is not retried")
		g.Expect(st.Message).To(SatisfyAll(
			ContainSubstring(fmt.Sprintf("POST returned %d", code)),
			ContainSubstring("Location "+target.URL+"/moved"),
			ContainSubstring("redirects are not followed")))
	}
	all, _ := target.count()
	g.Expect(all).To(BeZero(), "nothing reached the redirect target")
}

// TestHTTPStepIdempotencyKeyPerStep runs two http steps against one server:
// each step has its own key, the same on every attempt.
func TestHTTPStepIdempotencyKeyPerStep(t *testing.T) {
	ns := env.Namespace(t)
	srv := newRecordingServer(t, 503, 200)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", httpStep("first", srv.URL, 5), httpStep("second", srv.URL, 5)), newFriendDeletion(ns, "fd1", "app"))
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var keys []string
	for _, r := range srv.requests {
		keys = append(keys, r.Header.Get(IdempotencyKeyHeader))
	}
	uid := string(fd.UID)
	NewWithT(t).Expect(keys).To(Equal([]string{uid + "/first", uid + "/first", uid + "/second"}))
}

// TestHTTPStepClientErrorsFailAtOnce: a 4xx fails the step on its first
// attempt, except 408 and 429, which are retried.
func TestHTTPStepClientErrorsFailAtOnce(t *testing.T) {
	ns := env.Namespace(t)
	refused := newRecordingServer(t, http.StatusUnprocessableEntity)
	busy := newRecordingServer(t, http.StatusTooManyRequests, http.StatusRequestTimeout, http.StatusOK)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "refused", httpStep("notify", refused.URL, 5)), newFriendDeletion(ns, "fd-refused", "refused"),
		newConfig(ns, "busy", httpStep("notify", busy.URL, 5)), newFriendDeletion(ns, "fd-busy", "busy"))

	g := gt(t)
	fd := waitForPhase(t, ns, "fd-refused", snsv1alpha1.PhaseFailed)
	g.Expect(stepOf(g, fd, "notify").Message).To(Equal("Attempt 1 of 5 failed: POST returned 422 Unprocessable Entity: answer from test server; not retried."))
	fd = waitForPhase(t, ns, "fd-busy", snsv1alpha1.PhaseSucceeded)
	g.Expect(stepOf(g, fd, "notify").Attempts).To(Equal(int32(3)))
	all, _ := refused.count()
	g.Expect(all).To(Equal(1))
}

// TestHTTPStepHonoursRetryAfter answers 503 with Retry-After of 20 minutes:
// the next attempt is scheduled that much later, not after the (100ms)
// backoff.
func TestHTTPStepHonoursRetryAfter(t *testing.T) {
	ns := env.Namespace(t)
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		w.Header().Set("Retry-After", "1200")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", httpStep("notify", srv.URL, 5)), newFriendDeletion(ns, "fd1", "app"))

	g := gt(t)
	g.Eventually(func(g Gomega) {
		st := stepOf(g, getFD(g, ns, "fd1"), "notify")
		g.Expect(st.NextAttemptTime).NotTo(BeNil())
		g.Expect(st.NextAttemptTime.Sub(st.StartTime.Time)).To(BeNumerically(">=", 19*time.Minute))
		g.Expect(conditionOf(getFD(g, ns, "fd1"), "step.sns.imcallback.io/notify").Reason).To(Equal(snsv1alpha1.ReasonRetrying))
	}).Should(Succeed())
	g.Consistently(func() int {
		mu.Lock()
		defer mu.Unlock()
		return requests
	}).Should(Equal(1))
}

// hangingServer holds every request until the test ends, and records the
// most requests it held at once.
type hangingServer struct {
	*httptest.Server
	mu         sync.Mutex
	held, most int
	release    chan struct{}
}

func newHangingServer(t *testing.T) *hangingServer {
	s := &hangingServer{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.held++
		s.most = max(s.most, s.held)
		s.mu.Unlock()
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
		s.mu.Lock()
		s.held--
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.release) })
	return s
}

func (s *hangingServer) counts() (held, most int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, s.most
}

// TestSlowEndpointHoldsNoWorker sends eight FriendDeletions to an endpoint
// that never answers, with two reconcile workers: a job step of another
// config still runs to the end while those requests hang, and the slow
// config never has more than its bound of requests in flight.
func TestSlowEndpointHoldsNoWorker(t *testing.T) {
	ns := env.Namespace(t)
	slow := newHangingServer(t)
	opts := testOptions()
	opts.FriendDeletionConcurrency = 2
	opts.HTTPConcurrencyPerConfig = 2
	startManager(t, ns, opts)
	step := httpStep("notify", slow.URL, 5)
	step.HTTP.Timeout = &metav1.Duration{Duration: 5 * time.Minute}
	create(t, newConfig(ns, "slow", step))
	for i := range 8 {
		create(t, newFriendDeletion(ns, fmt.Sprintf("slow-%d", i), "slow"))
	}
	g := gt(t)
	g.Eventually(func() int { held, _ := slow.counts(); return held }).Should(Equal(2))

	create(t, newConfig(ns, "fast", jobStep("purge")), newFriendDeletion(ns, "fast", "fast"))
	setJobStatus(t, getJob(t, ns, "fast-purge"), "complete")
	waitForPhase(t, ns, "fast", snsv1alpha1.PhaseSucceeded)
	held, most := slow.counts()
	g.Expect(held).To(Equal(2), "the slow requests are still in flight")
	g.Expect(most).To(Equal(2), "at most HTTPConcurrencyPerConfig requests per config")
}

// TestHTTPStepCABundle calls an https server whose certificate no system
// root signed: with the server's CA in a ConfigMap named by caBundleRef the
// step succeeds; without it the attempt fails on the certificate.
func TestHTTPStepCABundle(t *testing.T) {
	ns := env.Namespace(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	create(t, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "private-ca"},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	})
	trusted := httpStep("notify", srv.URL, 1)
	trusted.HTTP.CABundleRef = &snsv1alpha1.ConfigMapKeyRef{Name: "private-ca", Key: "ca.crt"}
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "trusted", trusted), newFriendDeletion(ns, "fd-trusted", "trusted"),
		newConfig(ns, "untrusted", httpStep("notify", srv.URL, 1)), newFriendDeletion(ns, "fd-untrusted", "untrusted"))

	waitForPhase(t, ns, "fd-trusted", snsv1alpha1.PhaseSucceeded)
	fd := waitForPhase(t, ns, "fd-untrusted", snsv1alpha1.PhaseFailed)
	g := gt(t)
	g.Expect(stepOf(g, fd, "notify").Message).To(ContainSubstring("certificate"))
}

// TestJobOutcomeRecordedWhileWaitingForASendSlot: a deletion whose job step
// finished while every send slot of its config is held records the Job's
// outcome at once; the Job, deleted by someone else while the deletion
// waits for a slot, takes nothing with it, and once the slot is released
// the step stays Succeeded and the http step runs.
func TestJobOutcomeRecordedWhileWaitingForASendSlot(t *testing.T) {
	ns := env.Namespace(t)
	release := make(chan struct{})
	var mu sync.Mutex
	posts := 0
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		posts++
		first := posts == 1
		mu.Unlock()
		if first {
			<-release // the first request holds the only slot
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // before Close, which waits for the held request

	opts := testOptions()
	opts.HTTPConcurrencyPerConfig = 1
	startManager(t, ns, opts)
	cfg := newConfig(ns, "app", jobStep("purge"), httpStep("notify", sink.URL, 3))
	cfg.Spec.Retention.KeepFinishedJobs = true // so that the test deletes it
	create(t, cfg, newFriendDeletion(ns, "holder", "app"), newFriendDeletion(ns, "fd1", "app"))
	setJobStatus(t, getJob(t, ns, "holder-purge"), "complete")
	g := gt(t)
	g.Eventually(func() int { mu.Lock(); defer mu.Unlock(); return posts }).Should(Equal(1), "holder's request holds the slot")

	job := getJob(t, ns, "fd1-purge")
	setJobStatus(t, job, "complete")
	g.Eventually(func(g Gomega) {
		fd := getFD(g, ns, "fd1")
		g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded), "recorded while the slot is held")
		g.Expect(stepOf(g, fd, "notify").Attempts).To(BeZero())
	}).Should(Succeed())
	deleteJobAndWait(t, job)
	free()

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(stepOf(g, fd, "purge").Message).To(Equal("Job fd1-purge completed."))
	g.Expect(stepOf(g, fd, "notify").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty(), "not created again")
}
