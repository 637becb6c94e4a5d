package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// reconcileExternalStep runs nothing: it marks the step Running and waits
// for the step's reconciler to report the outcome (cleanup.Report), and
// fails the step when the config's deadline passes first. A reported retry
// (nextAttemptTime set) shows as reason Retrying, as for an http step, and
// the next report without one as Running again.
//
// Sets the step condition: Running, Retrying, or Failed with
// DeadlineExceeded.
func (r *FriendDeletionReconciler) reconcileExternalStep(_ context.Context, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.ExternalStep, st *snsv1alpha1.StepStatus) (ctrl.Result, error) {
	now := r.now()
	if st.Phase == snsv1alpha1.PhasePending {
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning,
			fmt.Sprintf("Waiting for the reconciler of step %q to report its outcome.", st.Name), now)
	}
	if st.Phase == snsv1alpha1.PhaseRunning {
		reason := externalReason(st)
		if c := meta.FindStatusCondition(fd.Status.Conditions, snsv1alpha1.StepConditionType(st.Name)); c == nil || c.Reason != reason {
			stepstatus.Mark(fd, st, st.Phase, reason, st.Message, now)
		}
	}
	if spec.Deadline == nil || spec.Deadline.Duration <= 0 {
		return ctrl.Result{}, nil
	}
	deadline := st.StartTime.Add(spec.Deadline.Duration)
	if now.Time.Before(deadline) {
		return ctrl.Result{RequeueAfter: deadline.Sub(now.Time)}, nil
	}
	stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonDeadlineExceeded,
		fmt.Sprintf("No outcome was reported within %s.", spec.Deadline.Duration), now)
	return ctrl.Result{}, nil
}

// externalReason is the condition reason of a Running external step:
// Retrying while a reported retry is pending, else Running.
func externalReason(st *snsv1alpha1.StepStatus) string {
	if st.NextAttemptTime != nil {
		return snsv1alpha1.ReasonRetrying
	}
	return snsv1alpha1.ReasonRunning
}
