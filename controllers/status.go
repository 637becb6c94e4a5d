package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// This file holds the pure functions that sum up a FriendDeletion's status.
// They read only their arguments, so status_test.go tests them as tables.

// summarizePhase sums up the steps: Failed when one failed, Succeeded when
// every one succeeded, Running once one has started, else Pending. A
// FriendDeletion without steps is Pending (its steps are not fixed yet).
func summarizePhase(steps []snsv1alpha1.StepStatus) snsv1alpha1.Phase {
	if len(steps) == 0 {
		return snsv1alpha1.PhasePending
	}
	succeeded, started := 0, false
	for _, st := range steps {
		switch st.Phase {
		case snsv1alpha1.PhaseFailed:
			return snsv1alpha1.PhaseFailed
		case snsv1alpha1.PhaseSucceeded:
			succeeded++
			started = true
		case snsv1alpha1.PhaseRunning:
			started = true
		}
	}
	switch {
	case succeeded == len(steps):
		return snsv1alpha1.PhaseSucceeded
	case started:
		return snsv1alpha1.PhaseRunning
	default:
		return snsv1alpha1.PhasePending
	}
}

// readyCondition is the FriendDeletion's Ready condition: True when every
// step succeeded; otherwise False with the reason of the step that decides
// the phase (the failed one, else the first unfinished one) and its message.
func readyCondition(steps []snsv1alpha1.StepStatus, conds []metav1.Condition, generation int64, now metav1.Time) metav1.Condition {
	c := metav1.Condition{
		Type:               snsv1alpha1.ConditionReady,
		Status:             metav1.ConditionFalse,
		ObservedGeneration: generation,
		LastTransitionTime: now,
	}
	phase := summarizePhase(steps)
	if phase == snsv1alpha1.PhaseSucceeded {
		c.Status, c.Reason = metav1.ConditionTrue, snsv1alpha1.ReasonSucceeded
		c.Message = fmt.Sprintf("All %d cleanup steps succeeded.", len(steps))
		return c
	}
	if len(steps) == 0 {
		c.Reason, c.Message = snsv1alpha1.ReasonPending, "Waiting for the cleanup steps to be fixed from the CallbackConfig."
		if sc := meta.FindStatusCondition(conds, snsv1alpha1.ConditionReady); sc != nil && sc.Reason == snsv1alpha1.ReasonConfigNotFound {
			c.Reason, c.Message = sc.Reason, sc.Message
		}
		return c
	}
	i := decidingStep(steps)
	st := steps[i]
	c.Reason = stepstatus.DefaultReason(st.Phase)
	if sc := meta.FindStatusCondition(conds, snsv1alpha1.StepConditionType(st.Name)); sc != nil && stepstatus.ReasonFits(st.Phase, sc.Reason) {
		c.Reason = sc.Reason
	}
	if phase == snsv1alpha1.PhaseFailed && c.Reason == snsv1alpha1.ReasonPending {
		c.Reason = snsv1alpha1.ReasonFailed
	}
	detail := st.Message
	if detail == "" {
		detail = string(st.Phase)
	}
	c.Message = fmt.Sprintf("Step %d of %d (%s): %s", i+1, len(steps), st.Name, detail)
	return c
}

// decidingStep is the index of the step the FriendDeletion's phase hangs on:
// the first failed step, else the first that has not succeeded, else the
// last.
func decidingStep(steps []snsv1alpha1.StepStatus) int {
	for i, st := range steps {
		if st.Phase == snsv1alpha1.PhaseFailed {
			return i
		}
	}
	for i, st := range steps {
		if st.Phase != snsv1alpha1.PhaseSucceeded {
			return i
		}
	}
	return len(steps) - 1
}

// syncStepConditions gives every step a condition that fits its phase. A
// step whose phase changed outside this reconciler (an external step
// reported by its reconciler) gets the default reason for its new phase; a
// step that was never run because an earlier one failed, or because the
// verification of the pairs left nothing to do, says so.
func syncStepConditions(fd *snsv1alpha1.FriendDeletion, now metav1.Time) {
	failed := ""
	for _, st := range fd.Status.Steps {
		if st.Phase == snsv1alpha1.PhaseFailed {
			failed = st.Name
			break
		}
	}
	notRun := ""
	if failed != "" {
		notRun = fmt.Sprintf("Not run: step %q failed.", failed)
	} else if vc := meta.FindStatusCondition(fd.Status.Conditions, snsv1alpha1.ConditionVerified); vc != nil && verificationEnded(fd) {
		notRun = "Not run: " + map[string]string{
			snsv1alpha1.ReasonNothingToClean: "every pair is still a friendship.",
			snsv1alpha1.ReasonStillFriends:   "a pair is still a friendship (verify.stillFriends: Fail).",
		}[vc.Reason]
	}
	for i := range fd.Status.Steps {
		st := &fd.Status.Steps[i]
		t := snsv1alpha1.StepConditionType(st.Name)
		cur := meta.FindStatusCondition(fd.Status.Conditions, t)
		if st.Phase == snsv1alpha1.PhasePending && notRun != "" {
			st.Message = notRun
			want := stepstatus.Condition(*st, snsv1alpha1.ReasonPending, fd.Generation, now)
			if cur == nil || cur.Message != want.Message {
				meta.SetStatusCondition(&fd.Status.Conditions, want)
			}
			continue
		}
		if cur != nil && stepstatus.ReasonFits(st.Phase, cur.Reason) && (cur.Status == metav1.ConditionTrue) == (st.Phase == snsv1alpha1.PhaseSucceeded) {
			if cur.Message != st.Message && st.Message != "" {
				cur.Message = st.Message
			}
			continue
		}
		meta.SetStatusCondition(&fd.Status.Conditions, stepstatus.Condition(*st, stepstatus.DefaultReason(st.Phase), fd.Generation, now))
	}
}

// summarize writes the FriendDeletion's phase, step conditions, Ready
// condition and completionTime from its steps, or from its verification
// while that runs or when it decided the outcome (see verifiedOutcome).
func summarize(fd *snsv1alpha1.FriendDeletion, now metav1.Time) {
	syncStepConditions(fd, now)
	phase, ready, decided := verifiedOutcome(fd, now)
	switch {
	case decided:
		fd.Status.Phase = phase
	case len(fd.Status.Steps) > 0 || fd.Status.Phase == "":
		fd.Status.Phase = summarizePhase(fd.Status.Steps)
	}
	if ready == nil {
		c := readyCondition(fd.Status.Steps, fd.Status.Conditions, fd.Generation, now)
		ready = &c
	}
	meta.SetStatusCondition(&fd.Status.Conditions, *ready)
	if fd.Status.Phase.Finished() && fd.Status.CompletionTime == nil {
		fd.Status.CompletionTime = &now
	}
	fd.Status.ObservedGeneration = fd.Generation
}

// verifiedOutcome is what the verification of the pairs says about the
// whole FriendDeletion. While it runs, Ready takes the Verified
// condition's reason and message (the steps wait). When it found nothing
// to clean up, the FriendDeletion is Succeeded with Ready reason
// NothingToClean; when a pair is still a friendship under the Fail
// policy, Failed with StillFriends (decided). Otherwise it has no say
// (ready nil).
func verifiedOutcome(fd *snsv1alpha1.FriendDeletion, now metav1.Time) (phase snsv1alpha1.Phase, ready *metav1.Condition, decided bool) {
	v := fd.Status.Verification
	vc := meta.FindStatusCondition(fd.Status.Conditions, snsv1alpha1.ConditionVerified)
	if v == nil || vc == nil {
		return "", nil, false
	}
	c := &metav1.Condition{
		Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: vc.Reason, Message: vc.Message,
		ObservedGeneration: fd.Generation, LastTransitionTime: now,
	}
	switch {
	case v.CompletionTime == nil:
		return "", c, false
	case vc.Reason == snsv1alpha1.ReasonNothingToClean:
		c.Status = metav1.ConditionTrue
		return snsv1alpha1.PhaseSucceeded, c, true
	case vc.Reason == snsv1alpha1.ReasonStillFriends:
		return snsv1alpha1.PhaseFailed, c, true
	}
	return "", nil, false
}
