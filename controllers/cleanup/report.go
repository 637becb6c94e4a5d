package cleanup

import (
	"context"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// ErrStepNotRunning is returned by Report when the step is not Running: it
// has not started yet, or it already finished (for example its deadline
// passed). Reporting the outcome a step already has is not an error.
var ErrStepNotRunning = errors.New("step is not running")

// ErrNoSuchStep is returned by Report when the FriendDeletion has no external
// step of that name.
var ErrNoSuchStep = errors.New("no such external step")

// Outcome is what a step reconciler found.
type Outcome struct {
	// Phase is Succeeded or Failed to finish the step, or Running to only
	// update its message (progress).
	Phase snsv1alpha1.Phase
	// Message says what happened, for people (kubectl describe). Cut to
	// 1024 bytes.
	Message string
}

// Succeeded is the Outcome of a step that did its work.
func Succeeded(message string) Outcome {
	return Outcome{Phase: snsv1alpha1.PhaseSucceeded, Message: message}
}

// Failed is the Outcome of a step that failed for good.
func Failed(message string) Outcome {
	return Outcome{Phase: snsv1alpha1.PhaseFailed, Message: message}
}

// Progress is the Outcome of a step that is still at work.
func Progress(message string) Outcome {
	return Outcome{Phase: snsv1alpha1.PhaseRunning, Message: message}
}

// Report records the outcome of the named external step in fd's status.
//
// It patches status.steps with an optimistic lock, starting from fd as
// given and re-reading it through c on a conflict, so it never overwrites a
// change it has not seen. fd is updated in place. The FriendDeletion
// reconciler then updates the step's condition, the FriendDeletion's phase
// and Ready condition, emits an Event, and starts the next step.
//
// Only a Running step takes an outcome: Report returns ErrStepNotRunning for
// a step that is Pending or already finished with another outcome, and
// nil (without writing) when the step already has this outcome, so a
// reconciler that reports twice, for example after a restart, is safe.
func Report(ctx context.Context, c client.Client, fd *snsv1alpha1.FriendDeletion, step string, outcome Outcome) error {
	switch outcome.Phase {
	case snsv1alpha1.PhaseSucceeded, snsv1alpha1.PhaseFailed, snsv1alpha1.PhaseRunning:
	default:
		return fmt.Errorf("reporting step %q: outcome phase must be Succeeded, Failed or Running, not %q", step, outcome.Phase)
	}
	first := true
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if !first {
			if err := c.Get(ctx, client.ObjectKeyFromObject(fd), fd); err != nil {
				return err
			}
		}
		first = false

		st := stepstatus.Find(fd, step)
		if st == nil || st.Type != snsv1alpha1.StepTypeExternal {
			return fmt.Errorf("reporting step %q of FriendDeletion %s/%s: %w", step, fd.Namespace, fd.Name, ErrNoSuchStep)
		}
		msg := stepstatus.Truncate(outcome.Message, stepstatus.MaxMessage)
		if st.Phase == outcome.Phase && (st.Phase != snsv1alpha1.PhaseRunning || st.Message == msg) {
			return nil
		}
		if st.Phase != snsv1alpha1.PhaseRunning {
			return fmt.Errorf("reporting step %q of FriendDeletion %s/%s as %s: it is %s: %w",
				step, fd.Namespace, fd.Name, outcome.Phase, st.Phase, ErrStepNotRunning)
		}
		base := fd.DeepCopy()
		stepstatus.Set(st, outcome.Phase, msg, metav1.Now())
		return c.Status().Patch(ctx, fd, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	})
}
