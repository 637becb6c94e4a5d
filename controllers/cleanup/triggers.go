package cleanup

import (
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// stepTriggers selects the FriendDeletion events that call the reconciler
// of the external step named step:
//
//   - create (also every object when the manager starts) and generic
//     events of a FriendDeletion whose step is Running;
//   - an update that moves the step into Running;
//   - an update of a Running step's FriendDeletion that changes
//     RequestAnnotation.
//
// Any other update, in particular a status write of the step's own
// reconciler or of the FriendDeletion reconciler, calls nothing: a
// reconciler that reports progress is not woken by its own report.
func stepTriggers(step string) predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return running(e.Object, step) },
		GenericFunc: func(e event.GenericEvent) bool { return running(e.Object, step) },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return shouldReconcile(e.ObjectOld, e.ObjectNew, step)
		},
	}
}

// shouldReconcile is the update rule of stepTriggers.
func shouldReconcile(old, cur client.Object, step string) bool {
	if !running(cur, step) {
		return false
	}
	return !running(old, step) || old.GetAnnotations()[RequestAnnotation] != cur.GetAnnotations()[RequestAnnotation]
}

// running reports whether obj is a FriendDeletion, not being deleted, whose
// external step of that name is Running.
func running(obj client.Object, step string) bool {
	fd, ok := obj.(*snsv1alpha1.FriendDeletion)
	if !ok || fd == nil || !fd.DeletionTimestamp.IsZero() {
		return false
	}
	st := stepstatus.Find(fd, step)
	return st != nil && st.Type == snsv1alpha1.StepTypeExternal && st.Phase == snsv1alpha1.PhaseRunning
}
