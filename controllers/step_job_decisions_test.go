package controllers

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// TestJobStepDecisions runs reconcileJobStep against a fake client for each
// combination of what the status recorded, whether the config still has
// the step, and whether the Job exists: what the step becomes, and whether
// a Job is created. "After a restart" rows have nothing in the manager's
// memory (no Job deletion seen by its watch): only what the statuses
// recorded decides. Rows with a batch make fd1 a member of fd0's batch Job
// (fd0-purge), with fd0's step as given.
func TestJobStepDecisions(t *testing.T) {
	const job = "fd1-purge"
	running := func(attempts int32) *snsv1alpha1.StepStatus {
		return &snsv1alpha1.StepStatus{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseRunning, JobName: "fd0-purge", Attempts: attempts, Message: "Running Job fd0-purge."}
	}
	succeeded := running(1)
	succeeded.Phase, succeeded.Message = snsv1alpha1.PhaseSucceeded, "Job fd0-purge completed."
	for _, tc := range []struct {
		name       string
		phase      snsv1alpha1.Phase
		jobName    string
		attempts   int32
		hasSpec    bool
		jobExists  bool
		first      *snsv1alpha1.StepStatus // fd0's step, for a batch
		wantPhase  snsv1alpha1.Phase
		wantReason string
		wantMsg    string
		wantJob    bool
	}{
		{"pending: intent, then the Job", snsv1alpha1.PhasePending, "", 0, true, false, nil,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Running Job fd1-purge.", true},
		{"intent recorded, Job never created: create it", snsv1alpha1.PhaseRunning, job, 0, true, false, nil,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Running Job fd1-purge.", true},
		{"intent recorded, Job never created, config gone: fail", snsv1alpha1.PhaseRunning, job, 0, false, false, nil,
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonConfigNotFound, "Its Job was never created.", false},
		{"intent recorded, Job exists (created, its record lost): seen", snsv1alpha1.PhaseRunning, job, 0, true, true, nil,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Running Job fd1-purge.", true},
		{"created recorded, Job gone: fail, not created again", snsv1alpha1.PhaseRunning, job, 1, true, false, nil,
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, "was deleted before its outcome was recorded", false},
		{"created recorded, Job gone, config gone: fail", snsv1alpha1.PhaseRunning, job, 1, false, false, nil,
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, "was deleted before its outcome was recorded", false},
		{"created recorded, config gone, Job runs: followed", snsv1alpha1.PhaseRunning, job, 1, false, true, nil,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Running Job fd1-purge.", true},
		{"intent recorded, Job seen deleted by the watch: fail, not created again", snsv1alpha1.PhaseRunning, job, 0, true, false, nil,
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, "was deleted before its outcome was recorded", false},
		{"intent recorded, Job completed: succeeded and seen", snsv1alpha1.PhaseRunning, job, 0, true, true, nil,
			snsv1alpha1.PhaseSucceeded, snsv1alpha1.ReasonSucceeded, "Job fd1-purge completed.", true},
		{"after a restart: created recorded, Job gone: fail, not created again", snsv1alpha1.PhaseRunning, job, 1, true, false, nil,
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, "was deleted before its outcome was recorded", false},
		{"batch member, Job runs: no write", snsv1alpha1.PhaseRunning, "fd0-purge", 0, true, true, running(1),
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Running Job fd0-purge.", true},
		{"batch member after a restart: the first member recorded the Job created, Job gone: fail", snsv1alpha1.PhaseRunning, "fd0-purge", 0, true, false, running(1),
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, "Job fd0-purge was deleted before its outcome was recorded", false},
		{"batch member after a restart: the first member recorded the outcome, Job gone: fail", snsv1alpha1.PhaseRunning, "fd0-purge", 0, true, false, succeeded,
			snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, "Job fd0-purge was deleted before its outcome was recorded", false},
		{"batch member after a restart: membership only, Job never created: create it", snsv1alpha1.PhaseRunning, "fd0-purge", 0, true, false, running(0),
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Running Job fd0-purge.", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			s := testenv.Scheme()
			fd := newFriendDeletion("ns", "fd1", "app")
			fd.UID = "uid-1"
			fd.Status.Steps = []snsv1alpha1.StepStatus{{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: tc.phase, JobName: tc.jobName, Attempts: tc.attempts}}
			if tc.jobName != "" && tc.attempts == 0 {
				fd.Status.Steps[0].Message = jobRunningMessage(tc.jobName) // as recordJobIntent left it
			}
			objs := []client.Object{fd}
			wantJobName := job
			if tc.first != nil {
				fd0 := newFriendDeletion("ns", "fd0", "app")
				fd0.UID = "uid-0"
				fd0.Status.Steps = []snsv1alpha1.StepStatus{*tc.first}
				objs = append(objs, fd0)
				wantJobName = "fd0-purge"
			}
			var cfg *snsv1alpha1.CallbackConfig
			var spec *snsv1alpha1.CleanupStep
			if tc.hasSpec {
				step := jobStep("purge")
				if tc.first != nil {
					step.Batch = &snsv1alpha1.JobBatch{MaxDeletions: 2}
				}
				cfg = newConfig("ns", "app", step)
				spec = &cfg.Spec.Cleanup[0]
			}
			completed := strings.Contains(tc.name, "completed")
			if tc.jobExists {
				j, err := buildJob(fd, "purge", jobStep("purge").Job, wantJobName, []byte(`[]`), s)
				g.Expect(err).NotTo(HaveOccurred())
				if completed {
					j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
				}
				objs = append(objs, j)
			}
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithStatusSubresource(&snsv1alpha1.FriendDeletion{}).
				WithIndex(&snsv1alpha1.FriendDeletion{}, indexCreatedJob, func(o client.Object) []string { return createdJobs(o.(*snsv1alpha1.FriendDeletion)) }).
				WithIndex(&snsv1alpha1.FriendDeletion{}, indexRunningJob, func(o client.Object) []string { return runningJobs(o.(*snsv1alpha1.FriendDeletion)) }).
				Build()
			g.Expect(c.Get(ctx, types.NamespacedName{Namespace: "ns", Name: "fd1"}, fd)).To(Succeed())
			r := &FriendDeletionReconciler{Client: c, APIReader: c, Options: DefaultOptions()}
			if strings.Contains(tc.name, "deleted by the watch") {
				r.jobDeletions().note(types.NamespacedName{Namespace: "ns", Name: "fd1"}, job)
			}
			if tc.jobName != "" && tc.attempts == 0 {
				// The intent's condition, as recordJobIntent wrote it.
				stepstatus.Mark(fd, &fd.Status.Steps[0], snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(tc.jobName), r.now())
				g.Expect(c.Status().Update(ctx, fd)).To(Succeed())
			}
			rv := fd.ResourceVersion
			p := newStatusPatcher(c, fd)
			st := stepstatus.Find(fd, "purge")

			_, err := r.reconcileJobStep(ctx, p, fd, cfg, spec, st)
			g.Expect(err).NotTo(HaveOccurred())
			st = stepstatus.Find(fd, "purge")
			g.Expect(st.Phase).To(Equal(tc.wantPhase))
			g.Expect(st.Message).To(ContainSubstring(tc.wantMsg))
			g.Expect(conditionOf(fd, snsv1alpha1.StepConditionType("purge")).Reason).To(Equal(tc.wantReason))
			switch {
			case tc.jobExists && tc.first != nil:
				// A member other than the first, whose Job runs as its
				// membership said: no write (the first records the Job).
				g.Expect(st.Attempts).To(BeZero())
				g.Expect(p.Patch(ctx, fd)).To(Succeed())
				g.Expect(fd.ResourceVersion).To(Equal(rv), "nothing to write")
			case tc.jobExists:
				g.Expect(st.Attempts).To(Equal(int32(1)), "a Job seen is recorded as created")
			case tc.wantJob && tc.first == nil:
				g.Expect(st.Attempts).To(Equal(int32(1)), "the Job's creation is recorded with the reconcile's write")
			}
			err = c.Get(ctx, types.NamespacedName{Namespace: "ns", Name: wantJobName}, &batchv1.Job{})
			g.Expect(apierrors.IsNotFound(err)).To(Equal(!tc.wantJob), "Job exists: %v", err)

			// Intent first: a Job that exists now is recorded in the stored
			// status, with the step list.
			if tc.wantJob {
				stored := &snsv1alpha1.FriendDeletion{}
				g.Expect(c.Get(ctx, types.NamespacedName{Namespace: "ns", Name: "fd1"}, stored)).To(Succeed())
				g.Expect(stepstatus.Find(stored, "purge").JobName).To(Equal(wantJobName))
			}
			if tc.wantJob && !tc.jobExists && tc.first != nil {
				// The batch Job re-created for its members is recorded
				// created on its first member, in one write.
				fd0 := &snsv1alpha1.FriendDeletion{}
				g.Expect(c.Get(ctx, types.NamespacedName{Namespace: "ns", Name: "fd0"}, fd0)).To(Succeed())
				g.Expect(stepstatus.Find(fd0, "purge").Attempts).To(Equal(int32(1)))
			}
		})
	}
}
