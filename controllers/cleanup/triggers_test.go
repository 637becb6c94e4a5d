package cleanup

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// fdWith is a FriendDeletion whose step "chat" has that type and phase (no
// step when phase is empty), with the request annotation when not empty.
func fdWith(typ snsv1alpha1.StepType, phase snsv1alpha1.Phase, request string, mutate ...func(*snsv1alpha1.FriendDeletion)) *snsv1alpha1.FriendDeletion {
	fd := &snsv1alpha1.FriendDeletion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "fd"}}
	if phase != "" {
		fd.Status.Steps = []snsv1alpha1.StepStatus{{Name: "chat", Type: typ, Phase: phase}}
	}
	if request != "" {
		fd.Annotations = map[string]string{RequestAnnotation: request}
	}
	for _, m := range mutate {
		m(fd)
	}
	return fd
}

func TestShouldReconcile(t *testing.T) {
	const ext = snsv1alpha1.StepTypeExternal
	progress := func(msg string) func(*snsv1alpha1.FriendDeletion) {
		return func(fd *snsv1alpha1.FriendDeletion) { fd.Status.Steps[0].Message = msg }
	}
	cases := []struct {
		name     string
		old, cur *snsv1alpha1.FriendDeletion
		want     bool
	}{
		{"steps fixed and step started in one write", fdWith(ext, "", ""), fdWith(ext, snsv1alpha1.PhaseRunning, ""), true},
		{"step entered Running", fdWith(ext, snsv1alpha1.PhasePending, ""), fdWith(ext, snsv1alpha1.PhaseRunning, ""), true},
		{"its own progress report", fdWith(ext, snsv1alpha1.PhaseRunning, "", progress("1 of 3")), fdWith(ext, snsv1alpha1.PhaseRunning, "", progress("2 of 3")), false},
		{"a condition or label change", fdWith(ext, snsv1alpha1.PhaseRunning, ""), fdWith(ext, snsv1alpha1.PhaseRunning, "", func(fd *snsv1alpha1.FriendDeletion) {
			fd.Labels = map[string]string{"a": "b"}
			fd.Status.Conditions = []metav1.Condition{{Type: "Ready"}}
		}), false},
		{"request annotation set", fdWith(ext, snsv1alpha1.PhaseRunning, ""), fdWith(ext, snsv1alpha1.PhaseRunning, "1"), true},
		{"request annotation changed", fdWith(ext, snsv1alpha1.PhaseRunning, "1"), fdWith(ext, snsv1alpha1.PhaseRunning, "2"), true},
		{"request annotation unchanged", fdWith(ext, snsv1alpha1.PhaseRunning, "1"), fdWith(ext, snsv1alpha1.PhaseRunning, "1", progress("x")), false},
		{"request on a Pending step", fdWith(ext, snsv1alpha1.PhasePending, ""), fdWith(ext, snsv1alpha1.PhasePending, "1"), false},
		{"step finished", fdWith(ext, snsv1alpha1.PhaseRunning, ""), fdWith(ext, snsv1alpha1.PhaseSucceeded, ""), false},
		{"an http step of that name", fdWith(snsv1alpha1.StepTypeHTTP, snsv1alpha1.PhasePending, ""), fdWith(snsv1alpha1.StepTypeHTTP, snsv1alpha1.PhaseRunning, ""), false},
		{"being deleted", fdWith(ext, snsv1alpha1.PhasePending, ""), fdWith(ext, snsv1alpha1.PhaseRunning, "", func(fd *snsv1alpha1.FriendDeletion) {
			fd.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
		}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := shouldReconcile(tc.old, tc.cur, "chat"); got != tc.want {
				t.Errorf("shouldReconcile = %v, want %v", got, tc.want)
			}
		})
	}
}
