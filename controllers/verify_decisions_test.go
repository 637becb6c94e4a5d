package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// verifiedFD is a FriendDeletion with three pairs, one Pending step, and
// the verification given (nil: its config does not verify), with the
// Verified condition reason given (empty: none).
func verifiedFD(relations string, complete bool, reason string) *snsv1alpha1.FriendDeletion {
	fd := newFriendDeletion("ns", "fd", "app",
		snsv1alpha1.FriendPair{From: "a", To: "b"}, snsv1alpha1.FriendPair{From: "a", To: "c"}, snsv1alpha1.FriendPair{From: "c", To: "a"})
	fd.Status.Steps = []snsv1alpha1.StepStatus{{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhasePending}}
	if relations != "" {
		v := &snsv1alpha1.Verification{}
		countRelations(v, []byte(relations))
		if complete {
			now := metav1.Now()
			v.CompletionTime = &now
		}
		fd.Status.Verification = v
	}
	if reason != "" {
		meta.SetStatusCondition(&fd.Status.Conditions, metav1.Condition{Type: snsv1alpha1.ConditionVerified, Status: metav1.ConditionFalse, Reason: reason, Message: reason + " message"})
	}
	return fd
}

func TestVerificationDecisions(t *testing.T) {
	for name, c := range map[string]struct {
		fd        *snsv1alpha1.FriendDeletion
		mayStart  bool
		pairs     int
		phase     snsv1alpha1.Phase
		readyWhy  string
		stepNotes bool // the Pending step says it was not run
	}{
		"config does not verify":   {fd: verifiedFD("", false, ""), mayStart: true, pairs: 3, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonPending},
		"not answered yet":         {fd: verifiedFD("???", false, snsv1alpha1.ReasonVerifying), pairs: 0, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonVerifying},
		"partly answered":          {fd: verifiedFD("N?N", false, snsv1alpha1.ReasonRetrying), pairs: 2, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonRetrying},
		"refused UserSig":          {fd: verifiedFD("???", false, snsv1alpha1.ReasonVerifyAuthFailed), pairs: 0, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonVerifyAuthFailed},
		"all gone":                 {fd: verifiedFD("NNN", true, snsv1alpha1.ReasonVerified), mayStart: true, pairs: 3, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonPending},
		"one skipped":              {fd: verifiedFD("WNN", true, snsv1alpha1.ReasonPairsSkipped), mayStart: true, pairs: 2, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonPending},
		"all friends":              {fd: verifiedFD("WAB", true, snsv1alpha1.ReasonNothingToClean), pairs: 0, phase: snsv1alpha1.PhaseSucceeded, readyWhy: snsv1alpha1.ReasonNothingToClean, stepNotes: true},
		"still friends, Fail":      {fd: verifiedFD("WNN", true, snsv1alpha1.ReasonStillFriends), pairs: 2, phase: snsv1alpha1.PhaseFailed, readyWhy: snsv1alpha1.ReasonStillFriends, stepNotes: true},
		"relations of other pairs": {fd: verifiedFD("NN", true, snsv1alpha1.ReasonVerified), mayStart: true, pairs: 0, phase: snsv1alpha1.PhasePending, readyWhy: snsv1alpha1.ReasonPending},
	} {
		t.Run(name, func(t *testing.T) {
			if got := stepsMayStart(c.fd); got != c.mayStart {
				t.Errorf("stepsMayStart = %v, want %v", got, c.mayStart)
			}
			if got := len(stepPairs(c.fd)); got != c.pairs {
				t.Errorf("stepPairs has %d pairs, want %d", got, c.pairs)
			}
			summarize(c.fd, metav1.Now())
			if c.fd.Status.Phase != c.phase {
				t.Errorf("phase %s, want %s", c.fd.Status.Phase, c.phase)
			}
			ready := meta.FindStatusCondition(c.fd.Status.Conditions, snsv1alpha1.ConditionReady)
			if ready == nil || ready.Reason != c.readyWhy {
				t.Errorf("Ready %+v, want reason %s", ready, c.readyWhy)
			}
			if msg := c.fd.Status.Steps[0].Message; (len(msg) > 8 && msg[:8] == "Not run:") != c.stepNotes {
				t.Errorf("step message %q", msg)
			}
			if c.phase.Finished() && c.fd.Status.CompletionTime == nil {
				t.Error("finished without completionTime")
			}
		})
	}
}

func TestVerifyBackoff(t *testing.T) {
	o := Options{VerifyBackoffBase: time.Second, VerifyBackoffMax: 10 * time.Second}
	for attempts, want := range map[int32]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 40: 10 * time.Second} {
		if got := verifyBackoff(o, attempts); got != want {
			t.Errorf("after %d failures: %s, want %s", attempts, got, want)
		}
	}
}

func TestVerifyEvents(t *testing.T) {
	// Ready mirrors the Verified condition while verification runs and
	// when it decided the outcome; otherwise the steps decide (Pending).
	verified := func(reason, msg string) *snsv1alpha1.FriendDeletionStatus {
		ready := reason
		if reason == snsv1alpha1.ReasonVerified || reason == snsv1alpha1.ReasonPairsSkipped {
			ready = snsv1alpha1.ReasonPending
		}
		return &snsv1alpha1.FriendDeletionStatus{Conditions: []metav1.Condition{
			{Type: snsv1alpha1.ConditionVerified, Reason: reason, Message: msg},
			{Type: snsv1alpha1.ConditionReady, Reason: ready, Message: msg},
		}}
	}
	for name, c := range map[string]struct {
		before, after *snsv1alpha1.FriendDeletionStatus
		want          []string
	}{
		"verifying is no news":      {&snsv1alpha1.FriendDeletionStatus{}, verified(snsv1alpha1.ReasonVerifying, "m"), nil},
		"all confirmed is no news":  {verified(snsv1alpha1.ReasonVerifying, "m"), verified(snsv1alpha1.ReasonVerified, "m"), nil},
		"skipped pairs":             {verified(snsv1alpha1.ReasonVerifying, "m"), verified(snsv1alpha1.ReasonPairsSkipped, "m"), []string{"PairsSkipped"}},
		"nothing to clean, once":    {verified(snsv1alpha1.ReasonVerifying, "m"), verified(snsv1alpha1.ReasonNothingToClean, "m"), []string{"NothingToClean"}},
		"each retry":                {verified(snsv1alpha1.ReasonRetrying, "attempt 1"), verified(snsv1alpha1.ReasonRetrying, "attempt 2"), []string{"VerifyRetrying"}},
		"auth failure, once":        {verified(snsv1alpha1.ReasonRetrying, "m"), verified(snsv1alpha1.ReasonVerifyAuthFailed, "m"), []string{"VerifyAuthFailed"}},
		"still friends fails, once": {verified(snsv1alpha1.ReasonVerifying, "m"), verified(snsv1alpha1.ReasonStillFriends, "m"), []string{"StillFriends"}},
	} {
		var got []string
		for _, e := range transitionEvents(c.before, c.after) {
			got = append(got, e.Reason)
		}
		if len(got) != len(c.want) || (len(got) > 0 && got[0] != c.want[0]) {
			t.Errorf("%s: events %q, want %q", name, got, c.want)
		}
	}
}
