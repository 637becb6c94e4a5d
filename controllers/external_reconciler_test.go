package controllers

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
)

// These tests run reconcilers written with the cleanup package, as a team
// outside this repository would, beside the operator's own.

// requestReconcile sets cleanup.RequestAnnotation, as
// `kubectl annotate --overwrite` would.
func requestReconcile(t *testing.T, ns, name, value string) {
	t.Helper()
	fd := &snsv1alpha1.FriendDeletion{}
	fd.Namespace, fd.Name = ns, name
	patch := []byte(`{"metadata":{"annotations":{"` + cleanup.RequestAnnotation + `":"` + value + `"}}}`)
	gt(t).Expect(env.Client.Patch(context.Background(), fd, client.RawPatch("application/merge-patch+json", patch))).To(Succeed())
}

// stepReconciler registers r for the external steps named step.
func stepReconciler(step string, r cleanup.StepReconcilerFunc) func(ctrl.Manager) error {
	return func(mgr ctrl.Manager) error { return cleanup.NewControllerManagedBy(mgr, step).Complete(r) }
}

// TestStepReconcilerIsNotWokenByStatusWrites counts the calls of a
// reconciler that reports progress on every call: its own report, and the
// FriendDeletion reconciler's write that follows, call it no more; the
// step entering Running and each change of the request annotation call it
// once each.
func TestStepReconcilerIsNotWokenByStatusWrites(t *testing.T) {
	ns := env.Namespace(t)
	var calls atomic.Int32
	startManager(t, ns, testOptions(), stepReconciler("crm", func(ctx context.Context, step *cleanup.Step) (ctrl.Result, error) {
		n := calls.Add(1)
		if err := step.Progress(ctx, fmt.Sprintf("Pass %d for group %s.", n, step.Params["group"])); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: time.Hour}, nil
	}))
	cfg := newConfig(ns, "app", externalStep("crm", 0))
	cfg.Spec.Cleanup[0].External.Params = map[string]string{"group": "all-staff"}
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))

	g := gt(t)
	waitForMessage := func(msg string) {
		g.Eventually(func(g Gomega) {
			fd := getFD(g, ns, "fd1")
			g.Expect(stepOf(g, fd, "crm").Message).To(Equal(msg))
			// The FriendDeletion reconciler has seen the report too.
			g.Expect(conditionOf(fd, "step.sns.imcallback.io/crm").Message).To(Equal(msg))
		}).Should(Succeed())
	}
	waitForMessage("Pass 1 for group all-staff.")
	g.Consistently(calls.Load).Should(Equal(int32(1)))

	// Another annotation is no request.
	poke(t, ns, "fd1")
	g.Consistently(calls.Load).Should(Equal(int32(1)))

	requestReconcile(t, ns, "fd1", "1")
	waitForMessage("Pass 2 for group all-staff.")
	g.Consistently(calls.Load).Should(Equal(int32(2)))
}

// TestStepRetryAndCheckpointSurviveARestart: a reconciler records a
// checkpoint and a retry; the manager stops; a new one calls the reconciler
// when the next attempt is due, with the checkpoint, and the step
// succeeds.
func TestStepRetryAndCheckpointSurviveARestart(t *testing.T) {
	ns := env.Namespace(t)
	var firstCalls atomic.Int32
	m1 := startManager(t, ns, testOptions(), stepReconciler("chat", func(ctx context.Context, step *cleanup.Step) (ctrl.Result, error) {
		if firstCalls.Add(1) > 1 {
			<-ctx.Done() // the next attempt is the second manager's
			return ctrl.Result{}, ctx.Err()
		}
		step.Checkpoint = "next=1200"
		return step.Retry(ctx, "chat API answered 503.", time.Second)
	}))
	create(t, newConfig(ns, "app", externalStep("chat", time.Hour)), newFriendDeletion(ns, "fd1", "app"))

	g := gt(t)
	g.Eventually(func(g Gomega) {
		fd := getFD(g, ns, "fd1")
		st := stepOf(g, fd, "chat")
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(st.Attempts).To(Equal(int32(1)))
		g.Expect(st.Checkpoint).To(Equal("next=1200"))
		g.Expect(st.NextAttemptTime).NotTo(BeNil())
		g.Expect(st.Message).To(Equal(fmt.Sprintf("Attempt 1 failed: chat API answered 503; next attempt at %s.",
			st.NextAttemptTime.UTC().Format(time.RFC3339))))
		c := conditionOf(fd, "step.sns.imcallback.io/chat")
		g.Expect(c.Reason).To(Equal(snsv1alpha1.ReasonRetrying))
		g.Expect(c.Message).To(Equal(st.Message))
	}).Should(Succeed())
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElement("StepRetrying"))
	m1.Stop()

	var seen atomic.Value
	startManager(t, ns, testOptions(), stepReconciler("chat", func(ctx context.Context, step *cleanup.Step) (ctrl.Result, error) {
		seen.Store(step.Checkpoint)
		step.Checkpoint = "next=2000"
		return ctrl.Result{}, step.Succeed(ctx, "Removed 2000 pairs.")
	}))
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(seen.Load()).To(Equal("next=1200"))
	st := stepOf(g, fd, "chat")
	g.Expect(st.Checkpoint).To(Equal("next=2000"))
	g.Expect(st.NextAttemptTime).To(BeNil())
	g.Expect(st.Attempts).To(Equal(int32(1)))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/chat").Reason).To(Equal(snsv1alpha1.ReasonSucceeded))
}

// TestCheckpointTooLargeWritesNothing: an oversized checkpoint is refused
// before any write, with an error the reconciler can test for.
func TestCheckpointTooLargeWritesNothing(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", externalStep("chat", 0)), newFriendDeletion(ns, "fd1", "app"))
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)
	big := string(make([]byte, cleanup.MaxCheckpoint+1))
	err := cleanup.Report(t.Context(), env.Client, env.Client, fd, "chat",
		cleanup.Outcome{Phase: snsv1alpha1.PhaseRunning, Message: "x", Checkpoint: &big})
	g := gt(t)
	g.Expect(err).To(MatchError(cleanup.ErrCheckpointTooLarge))
	g.Expect(stepOf(g, getFD(g, ns, "fd1"), "chat").Message).NotTo(Equal("x"))
}

// TestReportRereadsFromTheAPIServer: Report starts from a stale copy and
// writes through a client whose reads lag behind (as a cache that has not
// seen the latest write does). It must read the object again through the
// API reader, not through that client, to get past the conflict.
func TestReportRereadsFromTheAPIServer(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", externalStep("crm", 0)), newFriendDeletion(ns, "fd1", "app"))
	stale := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)
	g := gt(t)
	g.Expect(cleanup.Report(t.Context(), env.Client, env.Client, stale.DeepCopy(), "crm", cleanup.Progress("Half done."))).To(Succeed())

	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	lagging := interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(_ context.Context, _ client.WithWatch, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
			stale.DeepCopyInto(obj.(*snsv1alpha1.FriendDeletion))
			return nil
		},
	})
	// Re-reading through the lagging client cannot succeed...
	err = cleanup.Report(t.Context(), lagging, lagging, stale.DeepCopy(), "crm", cleanup.Succeeded("done"))
	g.Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
	// ...through the API reader it does.
	g.Expect(cleanup.Report(t.Context(), lagging, env.Client, stale.DeepCopy(), "crm", cleanup.Succeeded("done"))).To(Succeed())
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(stepOf(g, fd, "crm").Message).To(Equal("done"))
}
