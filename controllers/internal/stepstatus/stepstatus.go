// Package stepstatus reads and changes the per-step status of a
// FriendDeletion. The FriendDeletion reconciler and the cleanup step
// reconciler API share it, so that both write a step the same way.
package stepstatus

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// MaxMessage is the longest step message the API accepts.
const MaxMessage = 1024

// Find returns the status of the named step, or nil when the FriendDeletion
// has no such step.
func Find(fd *snsv1alpha1.FriendDeletion, name string) *snsv1alpha1.StepStatus {
	for i := range fd.Status.Steps {
		if fd.Status.Steps[i].Name == name {
			return &fd.Status.Steps[i]
		}
	}
	return nil
}

// Set moves the step to phase with message, stamps its start and completion
// times, and leaves its condition alone (the FriendDeletion reconciler
// brings conditions in line with phases).
func Set(st *snsv1alpha1.StepStatus, phase snsv1alpha1.Phase, message string, now metav1.Time) {
	st.Phase = phase
	st.Message = Truncate(message, MaxMessage)
	if phase != snsv1alpha1.PhasePending && st.StartTime == nil {
		st.StartTime = &now
	}
	if phase.Finished() {
		st.NextAttemptTime = nil
		if st.CompletionTime == nil {
			st.CompletionTime = &now
		}
	}
}

// Mark is Set plus the step's condition, with reason saying why.
func Mark(fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, phase snsv1alpha1.Phase, reason, message string, now metav1.Time) {
	Set(st, phase, message, now)
	meta.SetStatusCondition(&fd.Status.Conditions, Condition(*st, reason, fd.Generation, now))
}

// Condition is the condition that reports the step, with reason.
func Condition(st snsv1alpha1.StepStatus, reason string, generation int64, now metav1.Time) metav1.Condition {
	status := metav1.ConditionFalse
	if st.Phase == snsv1alpha1.PhaseSucceeded {
		status = metav1.ConditionTrue
	}
	msg := st.Message
	if msg == "" {
		msg = "Step " + string(st.Phase) + "."
	}
	return metav1.Condition{
		Type:               snsv1alpha1.StepConditionType(st.Name),
		Status:             status,
		Reason:             reason,
		Message:            Truncate(msg, 32768),
		ObservedGeneration: generation,
		LastTransitionTime: now,
	}
}

// DefaultReason is the condition reason for a step in phase, when nothing
// more specific is known.
func DefaultReason(phase snsv1alpha1.Phase) string {
	switch phase {
	case snsv1alpha1.PhaseRunning:
		return snsv1alpha1.ReasonRunning
	case snsv1alpha1.PhaseSucceeded:
		return snsv1alpha1.ReasonSucceeded
	case snsv1alpha1.PhaseFailed:
		return snsv1alpha1.ReasonFailed
	default:
		return snsv1alpha1.ReasonPending
	}
}

// ReasonFits reports whether a condition reason can describe a step in phase.
func ReasonFits(phase snsv1alpha1.Phase, reason string) bool {
	switch phase {
	case snsv1alpha1.PhaseRunning:
		return reason == snsv1alpha1.ReasonRunning || reason == snsv1alpha1.ReasonRetrying
	case snsv1alpha1.PhaseSucceeded:
		return reason == snsv1alpha1.ReasonSucceeded
	case snsv1alpha1.PhaseFailed:
		switch reason {
		case snsv1alpha1.ReasonFailed, snsv1alpha1.ReasonDeadlineExceeded,
			snsv1alpha1.ReasonConfigNotFound, snsv1alpha1.ReasonStepRemoved:
			return true
		}
		return false
	default:
		return reason == snsv1alpha1.ReasonPending || reason == snsv1alpha1.ReasonConfigNotFound
	}
}

// Truncate cuts s to at most n bytes, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "..."
	cut := n - len(mark)
	// Do not split a UTF-8 sequence.
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + mark
}
