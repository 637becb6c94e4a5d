package controllers

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
)

// poke changes an annotation, as `kubectl annotate` would, to have the
// FriendDeletion reconciled now (after a test moved the clock).
func poke(t *testing.T, ns, name string) {
	t.Helper()
	fd := &snsv1alpha1.FriendDeletion{}
	fd.Namespace, fd.Name = ns, name
	patch := []byte(`{"metadata":{"annotations":{"test/poke":"` + time.Now().Format(time.RFC3339Nano) + `"}}}`)
	gt(t).Expect(env.Client.Patch(context.Background(), fd, client.RawPatch("application/merge-patch+json", patch))).To(Succeed())
}

func TestExternalStepReportedSucceededAndFailed(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", externalStep("crm", 0)),
		newFriendDeletion(ns, "ok", "app"), newFriendDeletion(ns, "bad", "app"))

	g := gt(t)
	for _, name := range []string{"ok", "bad"} {
		fd := waitForPhase(t, ns, name, snsv1alpha1.PhaseRunning)
		st := stepOf(g, fd, "crm")
		g.Expect(st.Type).To(Equal(snsv1alpha1.StepTypeExternal))
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(st.Message).To(ContainSubstring(`Waiting for the reconciler of step "crm"`))
	}

	// Reporting a step that does not exist is refused.
	fd := waitForPhase(t, ns, "ok", snsv1alpha1.PhaseRunning)
	g.Expect(errors.Is(cleanup.Report(t.Context(), env.Client, env.Client, fd, "nope", cleanup.Succeeded("")), cleanup.ErrNoSuchStep)).To(BeTrue())

	g.Expect(cleanup.Report(t.Context(), env.Client, env.Client, fd, "crm", cleanup.Progress("Deleted 10 of 20 rows."))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(conditionOf(getFD(g, ns, "ok"), "step.sns.imcallback.io/crm").Message).To(Equal("Deleted 10 of 20 rows."))
	}).Should(Succeed())
	g.Expect(cleanup.Report(t.Context(), env.Client, env.Client, fd, "crm", cleanup.Succeeded("CRM records removed."))).To(Succeed())
	// Reporting the same outcome again is harmless; another one is refused.
	g.Expect(cleanup.Report(t.Context(), env.Client, env.Client, fd, "crm", cleanup.Succeeded("CRM records removed."))).To(Succeed())
	g.Expect(errors.Is(cleanup.Report(t.Context(), env.Client, env.Client, fd, "crm", cleanup.Failed("too late")), cleanup.ErrStepNotRunning)).To(BeTrue())

	fd = waitForPhase(t, ns, "ok", snsv1alpha1.PhaseSucceeded)
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/crm")).To(SatisfyAll(
		HaveField("Status", metav1.ConditionTrue), HaveField("Reason", snsv1alpha1.ReasonSucceeded), HaveField("Message", "CRM records removed.")))
	g.Expect(conditionOf(fd, "Ready").Status).To(Equal(metav1.ConditionTrue))

	bad := waitForPhase(t, ns, "bad", snsv1alpha1.PhaseRunning)
	g.Expect(cleanup.Report(t.Context(), env.Client, env.Client, bad, "crm", cleanup.Failed("CRM answered 403."))).To(Succeed())
	bad = waitForPhase(t, ns, "bad", snsv1alpha1.PhaseFailed)
	g.Expect(conditionOf(bad, "Ready")).To(SatisfyAll(HaveField("Reason", snsv1alpha1.ReasonFailed), HaveField("Message", ContainSubstring("CRM answered 403."))))
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "bad") }).Should(ContainElements("StepFailed", "Failed"))
	// A deletion that ran without a hitch is no news: no Event.
	g.Consistently(func(g Gomega) []string { return eventsFor(g, ns, "ok") }).Should(BeEmpty())
}

func TestExternalStepDeadline(t *testing.T) {
	ns := env.Namespace(t)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	opts := testOptions()
	opts.Clock = clk
	startManager(t, ns, opts)
	create(t, newConfig(ns, "app", externalStep("crm", 10*time.Minute)), newFriendDeletion(ns, "fd1", "app"))
	waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)

	clk.Step(9 * time.Minute)
	poke(t, ns, "fd1")
	gt(t).Consistently(func(g Gomega) {
		g.Expect(getFD(g, ns, "fd1").Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
	}).Should(Succeed())

	clk.Step(2 * time.Minute)
	poke(t, ns, "fd1")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/crm")).To(SatisfyAll(
		HaveField("Reason", snsv1alpha1.ReasonDeadlineExceeded), HaveField("Message", "No outcome was reported within 10m0s.")))
	g.Expect(conditionOf(fd, "Ready").Reason).To(Equal(snsv1alpha1.ReasonDeadlineExceeded))
	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElement("StepDeadlineExceeded"))
}

// TestThreeStepsOfDifferentKinds follows a job, an http and an external
// step in order, checking the phase and conditions at each transition.
func TestThreeStepsOfDifferentKinds(t *testing.T) {
	ns := env.Namespace(t)
	srv := newRecordingServer(t, http.StatusOK)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge"), httpStep("notify", srv.URL, 3), externalStep("crm", time.Hour)),
		newFriendDeletion(ns, "fd1", "app"))

	// 1. The Job runs; the later steps wait.
	job := getJob(t, ns, "fd1-purge")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)
	g := gt(t)
	g.Expect(fd.Status.Steps).To(HaveLen(3))
	g.Expect([]snsv1alpha1.Phase{fd.Status.Steps[0].Phase, fd.Status.Steps[1].Phase, fd.Status.Steps[2].Phase}).
		To(Equal([]snsv1alpha1.Phase{snsv1alpha1.PhaseRunning, snsv1alpha1.PhasePending, snsv1alpha1.PhasePending}))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/notify").Reason).To(Equal(snsv1alpha1.ReasonPending))
	g.Expect(conditionOf(fd, "Ready").Message).To(HavePrefix("Step 1 of 3 (purge)"))
	all, _ := srv.count()
	g.Expect(all).To(BeZero())

	// 2. The Job completes: the http step runs at once, then the external
	// step waits for its reporter.
	setJobStatus(t, job, "complete")
	g.Eventually(func(g Gomega) {
		fd = getFD(g, ns, "fd1")
		g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
		g.Expect(stepOf(g, fd, "notify").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
		g.Expect(stepOf(g, fd, "crm").Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(conditionOf(fd, "Ready").Message).To(HavePrefix("Step 3 of 3 (crm)"))
	}).Should(Succeed())
	all, _ = srv.count()
	g.Expect(all).To(Equal(1))

	// 3. The reporter reports: every step succeeded.
	g.Expect(cleanup.Report(t.Context(), env.Client, env.Client, fd, "crm", cleanup.Succeeded("done"))).To(Succeed())
	fd = waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	for _, c := range []string{"Ready", "step.sns.imcallback.io/purge", "step.sns.imcallback.io/notify", "step.sns.imcallback.io/crm"} {
		g.Expect(conditionOf(fd, c).Status).To(Equal(metav1.ConditionTrue), c)
	}
	g.Expect(conditionOf(fd, "Ready").Message).To(Equal("All 3 cleanup steps succeeded."))
}

func reportOK(t *testing.T, fd *snsv1alpha1.FriendDeletion, step string) error {
	return cleanup.Report(t.Context(), env.Client, env.Client, fd, step, cleanup.Succeeded("ok"))
}
