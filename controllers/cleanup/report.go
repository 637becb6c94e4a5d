package cleanup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// MaxCheckpoint is the longest checkpoint a step can record, in bytes.
const MaxCheckpoint = 4096

// ErrStepNotRunning is returned by Report when the step is not Running: it
// has not started yet, or it already finished (for example its deadline
// passed). Reporting the outcome a step already has is not an error.
var ErrStepNotRunning = errors.New("step is not running")

// ErrNoSuchStep is returned by Report when the FriendDeletion has no external
// step of that name.
var ErrNoSuchStep = errors.New("no such external step")

// ErrCheckpointTooLarge is returned by Report, which then writes nothing,
// for a checkpoint longer than MaxCheckpoint bytes.
var ErrCheckpointTooLarge = errors.New("checkpoint is longer than 4096 bytes")

// Outcome is what a step reconciler found.
type Outcome struct {
	// Phase is Succeeded or Failed to finish the step, or Running to only
	// update its message (progress) or record a failed attempt (RetryAfter).
	Phase snsv1alpha1.Phase
	// Message says what happened, for people (kubectl describe). Cut to
	// 1024 bytes.
	Message string
	// RetryAfter, with Phase Running, records a failed attempt: attempts
	// goes up by one, the next attempt is due after this wait, and the
	// message becomes "Attempt <n> failed: <Message>; next attempt at <time>."
	RetryAfter time.Duration
	// Checkpoint, when not nil, replaces the step's checkpoint. At most
	// MaxCheckpoint bytes.
	Checkpoint *string
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

// Retry is the Outcome of a failed attempt to be tried again after a wait.
func Retry(message string, after time.Duration) Outcome {
	return Outcome{Phase: snsv1alpha1.PhaseRunning, Message: message, RetryAfter: after}
}

// Report records the outcome of the named external step in fd's status.
//
// It patches status.steps with an optimistic lock, starting from fd as
// given. On a conflict it reads the FriendDeletion again through apiReader
// and retries, so it never overwrites a change it has not seen. Pass a
// reader that reads from the API server (mgr.GetAPIReader() in a manager,
// or a client made with client.New): a cache that has not seen the latest
// write would conflict again. fd is updated in place. The FriendDeletion
// reconciler then updates the step's condition, the FriendDeletion's phase
// and Ready condition, emits an Event, and starts the next step.
//
// Only a Running step takes an outcome: Report returns ErrStepNotRunning for
// a step that is Pending or already finished with another outcome, and
// nil (without writing) when the step already has this outcome, so a
// reconciler that reports twice, for example after a restart, is safe.
func Report(ctx context.Context, c client.Client, apiReader client.Reader, fd *snsv1alpha1.FriendDeletion, step string, outcome Outcome) error {
	switch outcome.Phase {
	case snsv1alpha1.PhaseSucceeded, snsv1alpha1.PhaseFailed, snsv1alpha1.PhaseRunning:
	default:
		return fmt.Errorf("reporting step %q: outcome phase must be Succeeded, Failed or Running, not %q", step, outcome.Phase)
	}
	if outcome.RetryAfter < 0 || (outcome.RetryAfter > 0 && outcome.Phase != snsv1alpha1.PhaseRunning) {
		return fmt.Errorf("reporting step %q: a retry must be Running with a positive wait", step)
	}
	if outcome.Checkpoint != nil && len(*outcome.Checkpoint) > MaxCheckpoint {
		return fmt.Errorf("reporting step %q: %d bytes: %w", step, len(*outcome.Checkpoint), ErrCheckpointTooLarge)
	}
	first := true
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if !first {
			if err := apiReader.Get(ctx, client.ObjectKeyFromObject(fd), fd); err != nil {
				return err
			}
		}
		first = false

		st := stepstatus.Find(fd, step)
		if st == nil || st.Type != snsv1alpha1.StepTypeExternal {
			return fmt.Errorf("reporting step %q of FriendDeletion %s/%s: %w", step, fd.Namespace, fd.Name, ErrNoSuchStep)
		}
		base := fd.DeepCopy()
		if !apply(st, outcome, metav1.Now()) {
			return nil
		}
		if st.Phase != outcome.Phase {
			return fmt.Errorf("reporting step %q of FriendDeletion %s/%s as %s: it is %s: %w",
				step, fd.Namespace, fd.Name, outcome.Phase, st.Phase, ErrStepNotRunning)
		}
		return c.Status().Patch(ctx, fd, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	})
}

// apply changes st as outcome says and reports whether there is anything
// to write. A step that is not Running is left alone; it returns true for
// it unless it already has the outcome's phase, so that Report can refuse
// another outcome.
func apply(st *snsv1alpha1.StepStatus, o Outcome, now metav1.Time) bool {
	msg := stepstatus.Truncate(o.Message, stepstatus.MaxMessage)
	if st.Phase != snsv1alpha1.PhaseRunning {
		return st.Phase != o.Phase
	}
	before := st.DeepCopy()
	if o.Checkpoint != nil {
		st.Checkpoint = *o.Checkpoint
	}
	switch {
	case o.RetryAfter > 0:
		st.Attempts++
		// Status times have second precision; round up so the attempt is
		// not shown as due before it is.
		next := metav1.NewTime(now.Add(o.RetryAfter + time.Second - 1).Truncate(time.Second))
		msg = stepstatus.Truncate(fmt.Sprintf("Attempt %d failed: %s; next attempt at %s.",
			st.Attempts, strings.TrimSuffix(o.Message, "."), next.UTC().Format(time.RFC3339)), stepstatus.MaxMessage)
		stepstatus.Set(st, o.Phase, msg, now)
		st.NextAttemptTime = &next
	default:
		stepstatus.Set(st, o.Phase, msg, now)
		st.NextAttemptTime = nil
	}
	return !equalStep(before, st)
}

// equalStep compares the fields apply changes.
func equalStep(a, b *snsv1alpha1.StepStatus) bool {
	return a.Phase == b.Phase && a.Message == b.Message && a.Attempts == b.Attempts &&
		a.Checkpoint == b.Checkpoint && a.NextAttemptTime.Equal(b.NextAttemptTime) &&
		a.CompletionTime.Equal(b.CompletionTime)
}
