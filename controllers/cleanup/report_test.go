package cleanup

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func TestApply(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	started := metav1.NewTime(now.Add(-time.Minute))
	next := metav1.NewTime(now.Add(30 * time.Second))
	running := func(mutate ...func(*snsv1alpha1.StepStatus)) snsv1alpha1.StepStatus {
		st := snsv1alpha1.StepStatus{Name: "chat", Type: snsv1alpha1.StepTypeExternal, Phase: snsv1alpha1.PhaseRunning,
			Message: "Removed 10 of 20.", StartTime: &started}
		for _, m := range mutate {
			m(&st)
		}
		return st
	}
	retrying := func(st *snsv1alpha1.StepStatus) {
		st.Attempts, st.NextAttemptTime = 1, &next
		st.Message = "Attempt 1 failed: chat API answered 503; next attempt at 2026-11-27T12:00:30Z."
	}
	cases := []struct {
		name      string
		st        snsv1alpha1.StepStatus
		o         Outcome
		want      snsv1alpha1.StepStatus
		wantWrite bool
	}{
		{"same progress writes nothing", running(), Progress("Removed 10 of 20."), running(), false},
		{"new progress", running(), Progress("Removed 15 of 20."),
			running(func(st *snsv1alpha1.StepStatus) { st.Message = "Removed 15 of 20." }), true},
		{"checkpoint only", running(), Outcome{Phase: snsv1alpha1.PhaseRunning, Message: "Removed 10 of 20.", Checkpoint: ptr.To("next=10")},
			running(func(st *snsv1alpha1.StepStatus) { st.Checkpoint = "next=10" }), true},
		{"retry", running(), Retry("chat API answered 503.", 30*time.Second), running(retrying), true},
		{"retry rounds the next attempt up to a second", running(), Retry("chat API answered 503", 29500*time.Millisecond), running(retrying), true},
		{"second retry", running(retrying), Retry("chat API answered 429", time.Minute),
			running(func(st *snsv1alpha1.StepStatus) {
				st.Attempts, st.NextAttemptTime = 2, ptr.To(metav1.NewTime(now.Add(time.Minute)))
				st.Message = "Attempt 2 failed: chat API answered 429; next attempt at 2026-11-27T12:01:00Z."
			}), true},
		{"progress after a retry clears the next attempt", running(retrying), Progress("Removed 11 of 20."),
			running(func(st *snsv1alpha1.StepStatus) { st.Attempts, st.Message = 1, "Removed 11 of 20." }), true},
		{"success after a retry", running(retrying), Succeeded("Removed 20 pairs."),
			running(func(st *snsv1alpha1.StepStatus) {
				st.Attempts, st.Phase, st.Message, st.CompletionTime = 1, snsv1alpha1.PhaseSucceeded, "Removed 20 pairs.", &now
			}), true},
		{"the outcome it already has", running(func(st *snsv1alpha1.StepStatus) { st.Phase = snsv1alpha1.PhaseFailed }), Failed("x"),
			running(func(st *snsv1alpha1.StepStatus) { st.Phase = snsv1alpha1.PhaseFailed }), false},
		{"another outcome of a finished step is left to Report to refuse", running(func(st *snsv1alpha1.StepStatus) { st.Phase = snsv1alpha1.PhaseFailed }), Succeeded("x"),
			running(func(st *snsv1alpha1.StepStatus) { st.Phase = snsv1alpha1.PhaseFailed }), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			st := tc.st
			g.Expect(apply(&st, tc.o, now)).To(Equal(tc.wantWrite))
			g.Expect(st).To(Equal(tc.want))
		})
	}
}
