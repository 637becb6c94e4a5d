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

// transitionEvents lists the Events for the condition changes between two
// written statuses: one per step condition or Ready condition whose reason
// changed, and one per new message of a Retrying step (each failed
// attempt).
func transitionEvents(before, after []metav1.Condition) []event {
	var out []event
	for _, c := range after {
		old := meta.FindStatusCondition(before, c.Type)
		if old != nil && old.Reason == c.Reason && (c.Reason != snsv1alpha1.ReasonRetrying || old.Message == c.Message) {
			continue
		}
		if old == nil && c.Reason == snsv1alpha1.ReasonPending {
			continue // a new step that has not started is no news
		}
		e := event{Type: eventType(c.Reason), Reason: c.Reason}
		if c.Type == snsv1alpha1.ConditionReady {
			e.Note = c.Message
			if c.Reason == snsv1alpha1.ReasonRunning || c.Reason == snsv1alpha1.ReasonRetrying || c.Reason == snsv1alpha1.ReasonPending {
				continue // step Events already tell the progress
			}
		} else {
			if !strings.HasPrefix(e.Reason, "Step") {
				e.Reason = "Step" + e.Reason
			}
			e.Note = fmt.Sprintf("Step %s: %s", c.Type[len(snsv1alpha1.StepConditionPrefix):], c.Message)
		}
		out = append(out, e)
	}
	return out
}

func eventType(reason string) string {
	switch reason {
	case snsv1alpha1.ReasonFailed, snsv1alpha1.ReasonRetrying, snsv1alpha1.ReasonDeadlineExceeded,
		snsv1alpha1.ReasonConfigNotFound, snsv1alpha1.ReasonStepRemoved:
		return corev1.EventTypeWarning
	}
	return corev1.EventTypeNormal
}
