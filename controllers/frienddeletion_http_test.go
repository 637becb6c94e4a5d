package controllers

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

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
		g.Expect(r.Header.Get("Idempotency-Key")).To(Equal(string(fd.UID)), "attempt %d", i+1)
		g.Expect(r.Header.Get("Authorization")).To(Equal("Bearer s3cret"))
		g.Expect(r.Header.Get("X-Team")).To(Equal("im"))
		g.Expect(r.Header.Get("Content-Type")).To(Equal("application/json"))
	}
	g.Expect(srv.bodies[2]).To(Equal(httpStepBody{
		Name: "fd1", Namespace: ns, SDKAppID: "1400000001",
		Pairs:    []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}},
		ClientIP: "203.0.113.7", OptPlatform: "RESTAPI",
	}))
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElements("StepRunning", "StepRetrying", "StepSucceeded", "Succeeded"))
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
