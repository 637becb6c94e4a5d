package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// event is one Kubernetes Event to emit about a FriendDeletion.
type event struct {
	Type, Reason, Note string
}

// transitionEvents lists the Events for what changed between two written
// statuses, only what a person should notice (every Event is an API
// write): a step failing (Failed, DeadlineExceeded, ConfigNotFound,
// StepRemoved), each failed attempt (a new message of a Retrying step), a
// step that succeeded after a retry, the FriendDeletion failing, and the
// FriendDeletion succeeding when a step of it needed a retry. A step
// starting or succeeding at once, and a deletion that ran without a hitch,
// are no news: the conditions tell that story.
func transitionEvents(before, after *snsv1alpha1.FriendDeletionStatus) []event {
	var out []event
	for _, c := range after.Conditions {
		old := meta.FindStatusCondition(before.Conditions, c.Type)
		if old != nil && old.Reason == c.Reason && (c.Reason != snsv1alpha1.ReasonRetrying || old.Message == c.Message) {
			continue
		}
		if !newsworthy(c, old, after.Steps) {
			continue
		}
		e := event{Type: eventType(c.Reason), Reason: c.Reason}
		switch {
		case c.Type == snsv1alpha1.ConditionVerified:
			if c.Reason == snsv1alpha1.ReasonRetrying {
				e.Reason = "VerifyRetrying"
			}
			e.Note = c.Message
		case c.Type == snsv1alpha1.ConditionReady:
			e.Note = c.Message
			if c.Reason == snsv1alpha1.ReasonSucceeded {
				e.Note += " After a retry."
			}
		default:
			if !strings.HasPrefix(e.Reason, "Step") {
				e.Reason = "Step" + e.Reason
			}
			e.Note = fmt.Sprintf("Step %s: %s", c.Type[len(snsv1alpha1.StepConditionPrefix):], c.Message)
		}
		out = append(out, e)
	}
	return out
}

// newsworthy reports whether a condition that changed from old (nil when
// new) is news for a person (see transitionEvents).
func newsworthy(c metav1.Condition, old *metav1.Condition, steps []snsv1alpha1.StepStatus) bool {
	if c.Type == snsv1alpha1.ConditionVerified {
		return verifyNewsworthy(c.Reason)
	}
	if c.Type == snsv1alpha1.ConditionReady && verifyReason(c.Reason) {
		return false // the Verified condition's Event tells it
	}
	switch c.Reason {
	case snsv1alpha1.ReasonPending, snsv1alpha1.ReasonRunning:
		return false
	case snsv1alpha1.ReasonSucceeded:
		if c.Type == snsv1alpha1.ConditionReady {
			return retried(steps)
		}
		return old != nil && old.Reason == snsv1alpha1.ReasonRetrying // recovered
	case snsv1alpha1.ReasonRetrying:
		return c.Type != snsv1alpha1.ConditionReady // the step's Event tells it
	}
	return true
}

// retried reports whether a step needed more than one attempt: an http or
// external step tried again, or a job step whose Job had a pod fail.
func retried(steps []snsv1alpha1.StepStatus) bool {
	for _, st := range steps {
		if st.Attempts > 1 {
			return true
		}
	}
	return false
}

// verifyNewsworthy reports whether a Verified condition with reason is
// news: pairs skipped, and failures (retries, a refused UserSig, a missing
// key, the Fail policy); not a verification in progress or one that
// confirmed every pair.
func verifyNewsworthy(reason string) bool {
	switch reason {
	case snsv1alpha1.ReasonVerifying, snsv1alpha1.ReasonVerified:
		return false
	}
	return true
}

// verifyReason reports whether a reason comes from the Verified condition.
func verifyReason(reason string) bool {
	switch reason {
	case snsv1alpha1.ReasonVerifying, snsv1alpha1.ReasonNothingToClean, snsv1alpha1.ReasonStillFriends,
		snsv1alpha1.ReasonVerifyAuthFailed, snsv1alpha1.ReasonSecretNotFound, snsv1alpha1.ReasonSecretKeyMissing,
		snsv1alpha1.ReasonVerifyRemoved:
		return true
	}
	return false
}

func eventType(reason string) string {
	switch reason {
	case snsv1alpha1.ReasonStillFriends, snsv1alpha1.ReasonVerifyAuthFailed, snsv1alpha1.ReasonVerifyRemoved,
		snsv1alpha1.ReasonSecretNotFound, snsv1alpha1.ReasonSecretKeyMissing:
		return corev1.EventTypeWarning
	case snsv1alpha1.ReasonFailed, snsv1alpha1.ReasonRetrying, snsv1alpha1.ReasonDeadlineExceeded,
		snsv1alpha1.ReasonConfigNotFound, snsv1alpha1.ReasonStepRemoved:
		return corev1.EventTypeWarning
	}
	return corev1.EventTypeNormal
}
