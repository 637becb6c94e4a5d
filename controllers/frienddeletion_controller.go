package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// FriendDeletionReconciler runs the cleanup steps of each FriendDeletion, in
// order, and sums them up in its status. See LIFECYCLE.md for the rules.
type FriendDeletionReconciler struct {
	client.Client
	// APIReader reads from the API server, bypassing the cache, where a
	// stale read would do harm: Secrets, and confirming that something the
	// cache does not have is really gone.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	HTTP      *http.Client
	Options   Options
	// VerifyMetrics, when set, counts the verification of pairs.
	VerifyMetrics *verifyMetrics

	sendsOnce sync.Once
	sends     *httpSends // http attempts in flight; see httpFlights

	logsOnce    sync.Once
	writes      *writeLog       // own status writes; see ownWrites
	deletedJobs *jobDeletionLog // Jobs deleted before their outcome; see jobDeletions
	// ourDeletions holds the UIDs of finished Jobs this reconciler is
	// deleting, whose delete events wake nothing.
	ourDeletions sync.Map

	sweepsOnce sync.Once
	sweeps     *countSweeps // count retention sweeps; see reconcileCountRetention

	imOnce    sync.Once
	im        *imClientSet // IM REST clients per config; see imClients
	batchOnce sync.Once
	batches   *batchState // batches being formed; see joinBatch
	// wake asks for reconciles of FriendDeletions whose batch another's
	// reconcile found due; see wakeUp.
	wake chan ctrlevent.GenericEvent
}

// deferStatus is set in a reconcile's context by a step that wants the
// status written by the next reconcile instead of this one.
type deferStatusKey struct{}

// deferStatus asks the running reconcile not to write the status: the
// watch event of what the step just created reconciles again (at low
// priority) and records it then, or the step wrote the status itself (an
// http attempt's claim, whose outcome its sender writes).
func deferStatus(ctx context.Context) {
	if p, ok := ctx.Value(deferStatusKey{}).(*bool); ok {
		*p = true
	}
}

// Reconcile fixes the step list on first sight, verifies the pairs with
// the IM backend when the config asks for it (verify.go), runs the steps in
// order, writes the summary, and deletes the FriendDeletion once its
// retention has passed. It needs no finalizer: everything it creates is owned by the
// FriendDeletion and goes with it.
func (r *FriendDeletionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	fd := &snsv1alpha1.FriendDeletion{}
	if err := r.Get(ctx, req.NamespacedName, fd); err != nil {
		if apierrors.IsNotFound(err) {
			r.ownWrites().forget(req.NamespacedName)
			r.jobDeletions().forget(req.NamespacedName)
			r.batchState().forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !fd.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	if fd.Status.Phase.Finished() {
		return r.reconcileFinished(ctx, fd)
	}
	if r.ownWrites().lagging(req.NamespacedName, fd.ResourceVersion, time.Now()) {
		// The cache has not caught up with this reconciler's own writes:
		// read it again in a moment rather than act on, and write over,
		// an older status.
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
	}

	patcher := newStatusPatcher(r.Client, fd)
	patcher.onWrite = func(before, after *snsv1alpha1.FriendDeletion) { r.emit(after, before, after) }
	patcher.writes = r.ownWrites()
	deferred := false
	ctx = context.WithValue(ctx, deferStatusKey{}, &deferred)
	var cfg *snsv1alpha1.CallbackConfig
	cfgKnown := false
	defer func() {
		result, retErr = r.finish(ctx, patcher, fd, deferred, result, retErr)
		if retErr == nil && !deferred {
			// Only what the API server has recorded counts: the
			// patcher's base, not what this reconcile meant to write.
			var res ctrl.Result
			res, retErr = r.deleteFinishedJobs(ctx, patcher.base, cfg, cfgKnown)
			result = minResult(result, res)
		}
	}()

	cfg, err := r.getConfig(ctx, fd)
	if err != nil {
		return ctrl.Result{}, err
	}
	cfgKnown = true
	if !r.fixSteps(fd, cfg) {
		return ctrl.Result{}, nil
	}
	if res, done, err := r.reconcileVerification(ctx, fd, cfg); !done || err != nil {
		return res, err
	}
	return r.reconcileSteps(ctx, patcher, fd, cfg)
}

// reconcileFinished applies the retention to a finished FriendDeletion and
// deletes its finished Jobs. It writes no status: the reconcile that
// finished it wrote the last one, and fd may be the cache's summary of it
// (see finishedSummary), which holds the step list and times but no
// messages or conditions.
func (r *FriendDeletionReconciler) reconcileFinished(ctx context.Context, fd *snsv1alpha1.FriendDeletion) (ctrl.Result, error) {
	r.jobDeletions().forget(client.ObjectKeyFromObject(fd))
	res, err := r.reconcileRetention(ctx, fd)
	if err != nil {
		return res, err
	}
	jobs, err := r.deleteFinishedJobs(ctx, fd, nil, false)
	return minResult(res, jobs), err
}

// finish runs at the end of every reconcile: unless a step deferred it, it
// sums up the steps (phase, conditions, completionTime), writes the status,
// and once the FriendDeletion is finished applies the retention.
func (r *FriendDeletionReconciler) finish(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, deferred bool, result ctrl.Result, retErr error) (ctrl.Result, error) {
	if p.missed {
		// Someone else's status write arrived during ours; its event was
		// held back.
		result = minResult(result, ctrl.Result{RequeueAfter: r.conflictDelay()})
	}
	if deferred && retErr == nil {
		return result, nil
	}
	summarize(fd, r.now())
	err := p.Patch(ctx, fd)
	if p.missed {
		result = minResult(result, ctrl.Result{RequeueAfter: r.conflictDelay()})
	}
	if err != nil {
		if apierrors.IsConflict(err) && retErr == nil {
			// Someone wrote the object since we read it, perhaps this
			// reconciler, whose writes wake nothing: reconcile again soon,
			// from the newer object.
			ctrl.LoggerFrom(ctx).V(1).Info("status changed while reconciling; will reconcile again")
			return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
		}
		return result, errors.Join(retErr, fmt.Errorf("patching status: %w", err))
	}
	if retErr != nil || !fd.Status.Phase.Finished() {
		return result, retErr
	}
	r.jobDeletions().forget(client.ObjectKeyFromObject(fd))
	res, err := r.reconcileRetention(ctx, fd)
	return minResult(result, res), err
}

// getConfig returns the FriendDeletion's CallbackConfig, or nil when it is
// gone. A miss in the cache is confirmed with the API server, so that a
// config created just before the FriendDeletion is not taken for gone.
func (r *FriendDeletionReconciler) getConfig(ctx context.Context, fd *snsv1alpha1.FriendDeletion) (*snsv1alpha1.CallbackConfig, error) {
	key := types.NamespacedName{Namespace: fd.Namespace, Name: fd.Spec.ConfigName}
	cfg := &snsv1alpha1.CallbackConfig{}
	err := r.Get(ctx, key, cfg)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, cfg)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting CallbackConfig %s: %w", key.Name, err)
	}
	return cfg, nil
}

// fixSteps gives a FriendDeletion seen for the first time one Pending step
// per cleanup step of its config, and, when the config verifies pairs, a
// verification to do first; neither changes after that.
// Without a config there is nothing to fix, and the FriendDeletion fails
// with Ready reason ConfigNotFound. It reports whether there are steps to run.
func (r *FriendDeletionReconciler) fixSteps(fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig) bool {
	if len(fd.Status.Steps) > 0 {
		return true
	}
	now := r.now()
	if cfg == nil {
		fd.Status.Phase = snsv1alpha1.PhaseFailed
		meta.SetStatusCondition(&fd.Status.Conditions, metav1.Condition{
			Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
			Reason:             snsv1alpha1.ReasonConfigNotFound,
			Message:            fmt.Sprintf("CallbackConfig %q does not exist; no cleanup step can run.", fd.Spec.ConfigName),
			ObservedGeneration: fd.Generation, LastTransitionTime: now,
		})
		return false
	}
	for _, s := range cfg.Spec.Cleanup {
		fd.Status.Steps = append(fd.Status.Steps, snsv1alpha1.StepStatus{
			Name: s.Name, Type: cleanupStepType(s), Phase: snsv1alpha1.PhasePending,
		})
	}
	startVerification(fd, cfg)
	return true
}

// emit records an Event for each condition that changed in a status write.
func (r *FriendDeletionReconciler) emit(fd, before, after *snsv1alpha1.FriendDeletion) {
	if r.Recorder == nil {
		return
	}
	for _, e := range transitionEvents(&before.Status, &after.Status) {
		r.Recorder.Eventf(fd, nil, e.Type, e.Reason, "Cleanup", "%s", e.Note)
	}
}

func (r *FriendDeletionReconciler) now() metav1.Time {
	return metav1.NewTime(r.Options.Clock.Now().Truncate(time.Second))
}

// conflictDelay is how long to wait before reconciling again after a
// status write refused as a conflict: the cache is behind, by moments.
func (r *FriendDeletionReconciler) conflictDelay() time.Duration {
	return max(r.Options.RetryBaseDelay, 10*time.Millisecond)
}

// minResult is the result that requeues soonest.
func minResult(a, b ctrl.Result) ctrl.Result {
	if a.RequeueAfter == 0 || (b.RequeueAfter > 0 && b.RequeueAfter < a.RequeueAfter) {
		a.RequeueAfter = b.RequeueAfter
	}
	return a
}
