package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// blockJobs holds back every Job creation in ns: a ResourceQuota on Jobs
// whose usage no quota controller computes (envtest runs none; the test
// writes the status a quota controller would start with) makes the API
// server refuse each Job with "status unknown for quota", a transient
// refusal. The returned func lifts it.
func blockJobs(t *testing.T, ns string) func() {
	t.Helper()
	hard := corev1.ResourceList{"count/jobs.batch": resource.MustParse("10")}
	q := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hold-jobs"},
		Spec:       corev1.ResourceQuotaSpec{Hard: hard},
	}
	create(t, q)
	q.Status.Hard = hard
	if err := env.Client.Status().Update(t.Context(), q); err != nil {
		t.Fatalf("setting quota status: %v", err)
	}
	return func() {
		t.Helper()
		if err := env.Client.Delete(context.Background(), q); err != nil {
			t.Fatalf("deleting quota: %v", err)
		}
	}
}

// waitForJobIntent waits until the step is recorded Running with its Job's
// name while no Job exists yet.
func waitForJobIntent(t *testing.T, ns, fdName, step string, steps ...string) {
	t.Helper()
	gt(t).Eventually(func(g Gomega) {
		fd := getFD(g, ns, fdName)
		var names []string
		for _, st := range fd.Status.Steps {
			names = append(names, st.Name)
		}
		g.Expect(names).To(Equal(steps))
		st := stepOf(g, fd, step)
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(st.JobName).To(Equal(jobName(fdName, step)))
		g.Expect(st.Attempts).To(BeZero())
		g.Expect(st.Message).To(ContainSubstring("status unknown for quota"), "the refusal is in the status")
	}).Should(Succeed())
	g := gt(t)
	g.Expect(jobsOf(g, ns, fdName)).To(BeEmpty())
}

// TestStepOrderIsRecordedBeforeTheJob reorders the config after the first
// step's intent is recorded and before its Job could be created: the Job of
// the recorded first step is created, and the steps run in the recorded
// order.
func TestStepOrderIsRecordedBeforeTheJob(t *testing.T) {
	ns := env.Namespace(t)
	lift := blockJobs(t, ns)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"), jobStep("notify"))
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	waitForJobIntent(t, ns, "fd1", "purge", "purge", "notify")

	g := gt(t)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
		cfg.Spec.Cleanup = []snsv1alpha1.CleanupStep{jobStep("notify"), jobStep("purge")}
		g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	}).Should(Succeed())
	lift()

	first := getJob(t, ns, "fd1-purge")
	g.Consistently(func(g Gomega) {
		g.Expect(jobsOf(g, ns, "fd1")).To(HaveLen(1))
	}).Should(Succeed())
	setJobStatus(t, first, "complete")
	second := getJob(t, ns, "fd1-notify")
	setJobStatus(t, second, "complete")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(fd.Status.Steps).To(HaveExactElements(HaveField("Name", "purge"), HaveField("Name", "notify")))
	g.Expect(stepOf(g, fd, "purge").CompletionTime.Time).NotTo(BeTemporally(">", stepOf(g, fd, "notify").StartTime.Time))
}

// TestConfigDeletedBeforeTheJobWasCreated deletes the config while the
// first step's intent is recorded and its Job could not be created yet:
// nothing ran, and the step fails saying so, without creating the Job.
func TestConfigDeletedBeforeTheJobWasCreated(t *testing.T) {
	ns := env.Namespace(t)
	lift := blockJobs(t, ns)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"))
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	waitForJobIntent(t, ns, "fd1", "purge", "purge")

	g := gt(t)
	g.Expect(env.Client.Delete(t.Context(), cfg)).To(Succeed())
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	lift()
	g.Expect(conditionOf(fd, "Ready").Reason).To(Equal(snsv1alpha1.ReasonConfigNotFound))
	g.Expect(stepOf(g, fd, "purge").Message).To(ContainSubstring("Its Job was never created."))
	g.Consistently(func(g Gomega) {
		g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())
	}).Should(Succeed())
}

// TestConfigDeletedRightAfterTheJobWasCreated deletes the config the moment
// the first Job appears: the status already records the step list and the
// Job, so the Job is followed to its end and only the step that never
// started fails.
func TestConfigDeletedRightAfterTheJobWasCreated(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"), jobStep("notify"))

	// Watch for the Job, to act the moment it exists.
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(t.Context(), &batchv1.JobList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	<-w.ResultChan()
	g := gt(t)
	fd := getFD(g, ns, "fd1")
	g.Expect(fd.Status.Steps).To(HaveLen(2), "the step list is recorded before the Job")
	g.Expect(stepOf(g, fd, "purge").JobName).To(Equal("fd1-purge"), "the Job is recorded before it is created")
	g.Expect(env.Client.Delete(t.Context(), cfg)).To(Succeed())

	job := getJob(t, ns, "fd1-purge")
	g.Consistently(func(g Gomega) {
		g.Expect(getFD(g, ns, "fd1").Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
	}).Should(Succeed())
	setJobStatus(t, job, "complete")
	fd = waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/notify").Reason).To(Equal(snsv1alpha1.ReasonConfigNotFound))
	// Its outcome recorded, the finished Job goes (with the config gone,
	// nothing asks to keep it), and nothing creates it again.
	g.Eventually(func(g Gomega) []batchv1.Job { return jobsOf(g, ns, "fd1") }).Should(BeEmpty())
	g.Consistently(func(g Gomega) []batchv1.Job { return jobsOf(g, ns, "fd1") }).Should(BeEmpty())
}

// TestFinishedJobDeletedKeepsItsOutcome deletes a Job after its step
// succeeded: the recorded outcome stands, and the Job is not created again.
func TestFinishedJobDeletedKeepsItsOutcome(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"), jobStep("notify"))
	cfg.Spec.Retention.KeepFinishedJobs = true // so the test can delete it
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	first := getJob(t, ns, "fd1-purge")
	setJobStatus(t, first, "complete")
	second := getJob(t, ns, "fd1-notify")

	g := gt(t)
	g.Expect(env.Client.Delete(t.Context(), first, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(env.Client.Get(t.Context(), client.ObjectKeyFromObject(first), &batchv1.Job{}))
	}).Should(BeTrue())
	setJobStatus(t, second, "complete")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	g.Consistently(func(g Gomega) {
		g.Expect(jobsOf(g, ns, "fd1")).To(HaveLen(1), "the deleted Job is not created again")
	}).Should(Succeed())
}

// TestRunningJobDeletedFailsTheStep deletes a running Job: the step fails
// with a clear message instead of running the cleanup again.
func TestRunningJobDeletedFailsTheStep(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge")), newFriendDeletion(ns, "fd1", "app"))
	job := getJob(t, ns, "fd1-purge")
	g := gt(t)
	// The step is Running, its Job recorded created (attempts 1).
	waitForJobRecorded(t, ns, "fd1", "purge")
	g.Eventually(func(g Gomega) int32 { return stepOf(g, getFD(g, ns, "fd1"), "purge").Attempts }).Should(Equal(int32(1)))

	g.Expect(env.Client.Delete(t.Context(), job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g.Expect(stepOf(g, fd, "purge").Message).To(ContainSubstring("was deleted before its outcome was recorded"))
	g.Consistently(func(g Gomega) {
		g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())
	}).Should(Succeed())
}
