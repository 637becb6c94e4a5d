package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// TestReconcileExternalStepReason: the step condition follows what the
// step's reconciler reported: Retrying while a retry is pending, Running
// otherwise.
func TestReconcileExternalStepReason(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	r := &FriendDeletionReconciler{Options: Options{Clock: clocktesting.NewFakePassiveClock(now)}}
	started := metav1.NewTime(now.Add(-time.Minute))
	next := metav1.NewTime(now.Add(time.Minute))
	cases := []struct {
		name        string
		st          snsv1alpha1.StepStatus
		reason      string // the condition's reason before, "" for none
		wantPhase   snsv1alpha1.Phase
		wantReason  string
		wantMessage string
	}{
		{"starts", snsv1alpha1.StepStatus{Phase: snsv1alpha1.PhasePending}, snsv1alpha1.ReasonPending,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, `Waiting for the reconciler of step "chat" to report its outcome.`},
		{"progress", snsv1alpha1.StepStatus{Phase: snsv1alpha1.PhaseRunning, StartTime: &started, Message: "Removed 100 of 2000."}, snsv1alpha1.ReasonRunning,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Removed 100 of 2000."},
		{"a reported retry", snsv1alpha1.StepStatus{Phase: snsv1alpha1.PhaseRunning, StartTime: &started, Attempts: 1, NextAttemptTime: &next, Message: "Attempt 1 failed: 503."}, snsv1alpha1.ReasonRunning,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRetrying, "Attempt 1 failed: 503."},
		{"progress after a retry", snsv1alpha1.StepStatus{Phase: snsv1alpha1.PhaseRunning, StartTime: &started, Attempts: 1, Message: "Removed 200 of 2000."}, snsv1alpha1.ReasonRetrying,
			snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, "Removed 200 of 2000."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			tc.st.Name, tc.st.Type = "chat", snsv1alpha1.StepTypeExternal
			fd := &snsv1alpha1.FriendDeletion{Status: snsv1alpha1.FriendDeletionStatus{Steps: []snsv1alpha1.StepStatus{tc.st}}}
			if tc.reason != "" {
				fd.Status.Conditions = []metav1.Condition{stepstatus.Condition(tc.st, tc.reason, 0, started)}
			}
			_, err := r.reconcileExternalStep(t.Context(), fd, &snsv1alpha1.ExternalStep{}, &fd.Status.Steps[0])
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(fd.Status.Steps[0].Phase).To(Equal(tc.wantPhase))
			c := conditionOf(fd, "step.sns.imcallback.io/chat")
			g.Expect(c.Reason).To(Equal(tc.wantReason))
			g.Expect(c.Message).To(Equal(tc.wantMessage))
		})
	}
}
