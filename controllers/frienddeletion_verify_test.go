package controllers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
	"github.com/imcallback/friend-deletion-operator/internal/imrest/imresttest"
)

const (
	testAppKey = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	testAdmin  = "administrator"
)

// fakeIM starts a fake IM REST API for the test app, and checks when the
// test ends that every request it got was well-formed.
func fakeIM(t *testing.T) *imresttest.Server {
	t.Helper()
	srv := imresttest.NewServer("1400000001", testAdmin, []byte(testAppKey))
	t.Cleanup(func() {
		srv.Close()
		if p := srv.Problems(); len(p) > 0 {
			t.Errorf("malformed IM REST requests: %q", p)
		}
	})
	return srv
}

// verifyingConfig is a config that verifies pairs with srv, and the
// Secret holding its secret key.
func verifyingConfig(ns, name string, srv *imresttest.Server, key string, steps ...snsv1alpha1.CleanupStep) (*snsv1alpha1.CallbackConfig, *corev1.Secret) {
	cfg := newConfig(ns, name, steps...)
	cfg.Spec.Verify = &snsv1alpha1.Verify{
		Endpoint: srv.URL, Identifier: testAdmin,
		SecretKeyRef: snsv1alpha1.SecretKeyRef{Name: name + "-im-key", Key: "secretKey"},
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-im-key"},
		Data:       map[string][]byte{"secretKey": []byte(key)},
	}
	return cfg, secret
}

func jobPairs(g Gomega, job *batchv1.Job) []snsv1alpha1.FriendPair {
	var pairs []snsv1alpha1.FriendPair
	g.Expect(json.Unmarshal([]byte(job.Spec.Template.Annotations[PairsAnnotation]), &pairs)).To(Succeed())
	return pairs
}

func TestVerifyRunsTheJobWithOnlyTheGonePair(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.MakeFriends("alice", "bob") // deleted, then added back
	bodies := make(chan []byte, 4)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- b
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"), httpStep("notify", sink.URL, 1))
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app",
		snsv1alpha1.FriendPair{From: "alice", To: "bob"}, snsv1alpha1.FriendPair{From: "alice", To: "carol"}))

	job := getJob(t, ns, "fd1-purge")
	g := gt(t)
	g.Expect(jobPairs(g, job)).To(Equal([]snsv1alpha1.FriendPair{{From: "alice", To: "carol"}}))
	g.Expect(job.Spec.Template.Spec.Containers[0].Env).To(ContainElements(
		corev1.EnvVar{Name: "PAIR_COUNT", Value: "1"},
		corev1.EnvVar{Name: "FROM_ACCOUNT", Value: "alice"},
		corev1.EnvVar{Name: "TO_ACCOUNT", Value: "carol"},
	))
	fd := getFD(g, ns, "fd1")
	g.Expect(fd.Status.Verification).NotTo(BeNil())
	g.Expect(fd.Status.Verification.Relations).To(Equal("WN"))
	g.Expect(fd.Status.Verification.Verified).To(Equal("1/2"))
	g.Expect(fd.Status.Verification.Skipped).To(Equal(int32(1)))
	g.Expect(conditionOf(fd, snsv1alpha1.ConditionVerified)).To(SatisfyAll(
		HaveField("Status", metav1.ConditionTrue), HaveField("Reason", snsv1alpha1.ReasonPairsSkipped),
		HaveField("Message", ContainSubstring("alice and bob"))))
	g.Expect(srv.Calls()).To(HaveLen(1), "one friend_check call for both pairs of alice")
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElement(snsv1alpha1.ReasonPairsSkipped))

	setJobStatus(t, job, "complete")
	fd = waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(conditionOf(fd, "Ready").Reason).To(Equal(snsv1alpha1.ReasonSucceeded))
	g.Expect(srv.Calls()).To(HaveLen(1), "a verified deletion is not asked about again")
	// The http step's body holds only the gone pair too.
	var body struct {
		Pairs []snsv1alpha1.FriendPair `json:"pairs"`
	}
	g.Expect(json.Unmarshal(<-bodies, &body)).To(Succeed())
	g.Expect(body.Pairs).To(Equal([]snsv1alpha1.FriendPair{{From: "alice", To: "carol"}}))
}

func TestVerifyAllReAddedEndsNothingToCleanAndRunsNoStep(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.MakeFriends("alice", "bob")
	srv.AddFriend("carol", "alice") // carol still has alice
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"), httpStep("notify", "http://127.0.0.1:1/never", 1))
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app",
		snsv1alpha1.FriendPair{From: "alice", To: "bob"}, snsv1alpha1.FriendPair{From: "alice", To: "carol"}))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g := gt(t)
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(
		HaveField("Status", metav1.ConditionTrue), HaveField("Reason", snsv1alpha1.ReasonNothingToClean)))
	g.Expect(fd.Status.Verification.Relations).To(Equal("WB"))
	g.Expect(fd.Status.Verification.Verified).To(Equal("0/2"))
	g.Expect(fd.Status.CompletionTime).NotTo(BeNil())
	for _, st := range fd.Status.Steps {
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhasePending), "step %s", st.Name)
		g.Expect(st.Message).To(HavePrefix("Not run:"))
		g.Expect(st.StartTime).To(BeNil())
	}
	g.Consistently(func(g Gomega) []batchv1.Job { return jobsOf(g, ns, "fd1") }).Should(BeEmpty())
	g.Expect(eventsFor(g, ns, "fd1")).To(ConsistOf(snsv1alpha1.ReasonNothingToClean))
}

func TestVerifyRetriesErrorCodesAnd500s(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.FailNext(imresttest.FailErrorCode, imresttest.FailHTTP500, imresttest.FailItems)
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"))
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app"))

	job := getJob(t, ns, "fd1-purge")
	g := gt(t)
	g.Expect(jobPairs(g, job)).To(Equal([]snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}))
	fd := getFD(g, ns, "fd1")
	g.Expect(fd.Status.Verification.Attempts).To(Equal(int32(3)), "an ErrorCode, a 500 and a failed item, each retried")
	g.Expect(fd.Status.Verification.Relations).To(Equal("N"))
	g.Expect(conditionOf(fd, snsv1alpha1.ConditionVerified).Reason).To(Equal(snsv1alpha1.ReasonVerified))
	g.Expect(srv.Calls()).To(HaveLen(4))
	m, err := newVerifyMetrics()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testutil.ToFloat64(m.calls.WithLabelValues(ns, "app", verifyCallOK))).To(Equal(2.0), "the failed items' answer and the last")
	g.Expect(testutil.ToFloat64(m.calls.WithLabelValues(ns, "app", verifyCallError))).To(Equal(2.0), "the ErrorCode and the 500")
	g.Expect(testutil.ToFloat64(m.pairs.WithLabelValues(ns, "app", verifyPairsGone))).To(Equal(1.0))
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElement("VerifyRetrying"))
	// The retry messages say what failed and never give the key away.
	notes := verifyEventNotes(g, ns, "fd1")
	g.Expect(strings.Join(notes, "\n")).To(SatisfyAll(
		ContainSubstring("ErrorCode 30001"), ContainSubstring("HTTP 500"), ContainSubstring("ResultCode 30006"),
		Not(ContainSubstring(testAppKey)), Not(ContainSubstring("usersig"))))

	var raw []byte
	// Retained once finished, the one-pair deletion (its only object now
	// that the Job is deleted) stays within 4 KiB, verification included.
	setJobStatus(t, job, "complete")
	fd = waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Eventually(func(g Gomega) []batchv1.Job { return jobsOf(g, ns, "fd1") }).Should(BeEmpty())
	fd.ManagedFields = nil
	raw, err = json.Marshal(fd)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(len(raw)).To(BeNumerically("<=", 4096), "%s", raw)
}

// verifyEventNotes lists the notes of the VerifyRetrying Events about fd.
func verifyEventNotes(g Gomega, ns, name string) []string {
	var list eventsv1.EventList
	g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == "VerifyRetrying" {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

func TestVerifyWrongKeyIsAnAuthErrorUntilTheSecretChanges(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, "not-the-app-key", jobStep("purge"))
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app"))

	g := gt(t)
	g.Eventually(func(g Gomega) {
		c := conditionOf(getFD(g, ns, "fd1"), snsv1alpha1.ConditionVerified)
		g.Expect(c.Reason).To(Equal(snsv1alpha1.ReasonVerifyAuthFailed))
		g.Expect(c.Message).To(SatisfyAll(ContainSubstring("70009"), ContainSubstring("refused the UserSig"), Not(ContainSubstring("not-the-app-key"))))
	}).Should(Succeed())
	fd := getFD(g, ns, "fd1")
	g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhasePending))
	g.Expect(conditionOf(fd, "Ready").Reason).To(Equal(snsv1alpha1.ReasonVerifyAuthFailed))
	// No retry while the key is the same.
	calls := len(srv.Calls())
	m, err := newVerifyMetrics()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testutil.ToFloat64(m.calls.WithLabelValues(ns, "app", verifyCallAuth))).To(Equal(float64(calls)))
	poke(t, ns, "fd1")
	g.Consistently(func() int { return len(srv.Calls()) }).Should(Equal(calls))
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())

	secret.Data["secretKey"] = []byte(testAppKey)
	g.Expect(env.Client.Update(t.Context(), secret)).To(Succeed())
	job := getJob(t, ns, "fd1-purge")
	g.Expect(jobPairs(g, job)).To(Equal([]snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}))
	g.Expect(conditionOf(getFD(g, ns, "fd1"), snsv1alpha1.ConditionVerified).Reason).To(Equal(snsv1alpha1.ReasonVerified))
}

func TestVerifyAuthErrorIsRetriedWhenTheConfigChanges(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.SetKey([]byte("the-key-the-im-console-has-now"))
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"))
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app"))

	g := gt(t)
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(getFD(g, ns, "fd1"), snsv1alpha1.ConditionVerified).Reason).To(Equal(snsv1alpha1.ReasonVerifyAuthFailed))
	}).Should(Succeed())
	// The IM console's key goes back to the one in the Secret: nothing
	// here changed, so nothing is retried...
	srv.SetKey([]byte(testAppKey))
	calls := len(srv.Calls())
	g.Consistently(func() int { return len(srv.Calls()) }).Should(Equal(calls))
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())

	// ...until the config's verify changes (here its rate).
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
		cfg.Spec.Verify.RequestsPerSecond = 21
		g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	}).Should(Succeed())
	getJob(t, ns, "fd1-purge")
}

func TestVerifyStillFriendsFailPolicyFailsTheDeletion(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.MakeFriends("alice", "bob")
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"))
	cfg.Spec.Verify.StillFriends = snsv1alpha1.StillFriendsFail
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app",
		snsv1alpha1.FriendPair{From: "alice", To: "bob"}, snsv1alpha1.FriendPair{From: "alice", To: "carol"}))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(
		HaveField("Reason", snsv1alpha1.ReasonStillFriends), HaveField("Message", ContainSubstring("1 of 2 pairs"))))
	g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhasePending))
	g.Consistently(func(g Gomega) []batchv1.Job { return jobsOf(g, ns, "fd1") }).Should(BeEmpty())
	g.Expect(eventsFor(g, ns, "fd1")).To(ConsistOf(snsv1alpha1.ReasonStillFriends))
}

func TestVerifyExternalStepGetsOnlyTheGonePairs(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.AddFriend("bob", "alice") // bob->alice: bob still has alice
	var mu sync.Mutex
	var seen []snsv1alpha1.FriendPair
	startManager(t, ns, testOptions(), func(mgr ctrl.Manager) error {
		return cleanup.NewControllerManagedBy(mgr, "crm").Complete(cleanup.StepReconcilerFunc(func(ctx context.Context, s *cleanup.Step) (ctrl.Result, error) {
			mu.Lock()
			seen = s.Pairs
			mu.Unlock()
			return ctrl.Result{}, s.Succeed(ctx, "done")
		}))
	})
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, externalStep("crm", 0))
	create(t, secret, cfg, newFriendDeletion(ns, "fd1", "app",
		snsv1alpha1.FriendPair{From: "bob", To: "alice"}, snsv1alpha1.FriendPair{From: "alice", To: "dave"}, snsv1alpha1.FriendPair{From: "dave", To: "alice"}))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g := gt(t)
	mu.Lock()
	defer mu.Unlock()
	g.Expect(seen).To(Equal([]snsv1alpha1.FriendPair{{From: "alice", To: "dave"}, {From: "dave", To: "alice"}}))
	g.Expect(fd.Status.Verification.Relations).To(Equal("ANN"))
	g.Expect(srv.Calls()).To(HaveLen(1), "alice's two friendships in one call, dave->alice answered by alice->dave")
}

func TestVerifyConfigWithoutTheSecretRetries(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, jobStep("purge"))
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))

	g := gt(t)
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(getFD(g, ns, "fd1"), snsv1alpha1.ConditionVerified).Reason).To(Equal(snsv1alpha1.ReasonSecretNotFound))
	}).Should(Succeed())
	g.Expect(srv.Calls()).To(BeEmpty())
	create(t, secret)
	getJob(t, ns, "fd1-purge")
}

// TestVerifyBeforeJoiningABatch: with a batched job step, each deletion is
// verified in its own reconcile before it may join a batch, even one whose
// steps were not yet fixed when another's reconcile formed the batch: the
// batch Job gets only the gone pairs, and a deletion whose pairs are all
// still friendships joins no batch.
func TestVerifyBeforeJoiningABatch(t *testing.T) {
	ns := env.Namespace(t)
	srv := fakeIM(t)
	srv.MakeFriends("alice", "bob")
	srv.MakeFriends("frank", "gina")
	startManager(t, ns, testOptions())
	cfg, secret := verifyingConfig(ns, "app", srv, testAppKey, batchJobStep("purge", 2, 0, 10*time.Minute))
	cfg.Spec.Verify.RequestsPerSecond = 200
	create(t, secret, cfg,
		newFriendDeletion(ns, "fd1", "app", snsv1alpha1.FriendPair{From: "alice", To: "bob"}, snsv1alpha1.FriendPair{From: "alice", To: "carol"}),
		newFriendDeletion(ns, "fd3", "app", snsv1alpha1.FriendPair{From: "frank", To: "gina"}),
		newFriendDeletion(ns, "fd2", "app", snsv1alpha1.FriendPair{From: "dave", To: "erin"}))

	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"fd1", "fd2", "fd3"} {
				fd := &snsv1alpha1.FriendDeletion{}
				_ = env.Client.Get(context.Background(), nsName(ns, n), fd)
				b, _ := json.Marshal(fd.Status)
				t.Logf("status of %s: %s", n, b)
			}
		}
	})
	fd3 := waitForPhase(t, ns, "fd3", snsv1alpha1.PhaseSucceeded)
	g := gt(t)
	g.Expect(conditionOf(fd3, "Ready").Reason).To(Equal(snsv1alpha1.ReasonNothingToClean))
	g.Expect(stepOf(g, fd3, "purge").JobName).To(BeEmpty())
	job := onlyBatchJob(t, ns)
	f := batchFileOf(g, &job)
	g.Expect(f.Deletions).To(ConsistOf("fd1", "fd2"))
	g.Expect(f.Pairs).To(ConsistOf(
		batchPair{FriendDeletion: "fd1", From: "alice", To: "carol"},
		batchPair{FriendDeletion: "fd2", From: "dave", To: "erin"}))
	for _, n := range []string{"fd1", "fd2"} {
		g.Expect(getFD(g, ns, n).Status.Verification).NotTo(BeNil(), "%s was verified", n)
	}
}
