package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Retention the API defaults to, used when the config is gone.
const (
	defaultRetentionSucceeded = 24 * time.Hour
	defaultRetentionFailed    = 168 * time.Hour
)

// reconcileRetention deletes a finished FriendDeletion once its config's
// retention for its phase has passed since completionTime, and otherwise
// asks to be called again then. Its Jobs (with their pods) and ConfigMaps
// are deleted by the garbage collector through their owner references.
func (r *FriendDeletionReconciler) reconcileRetention(ctx context.Context, fd *snsv1alpha1.FriendDeletion) (ctrl.Result, error) {
	if fd.Status.CompletionTime == nil {
		return ctrl.Result{}, nil
	}
	cfg, err := r.getConfig(ctx, fd)
	if err != nil {
		return ctrl.Result{}, err
	}
	keep := retentionFor(fd.Status.Phase, cfg)
	if wait := fd.Status.CompletionTime.Add(keep).Sub(r.Options.Clock.Now()); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	err = r.Delete(ctx, fd, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &fd.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return ctrl.Result{}, fmt.Errorf("deleting after retention: %w", err)
	}
	// No Event: one per deletion is an API write that tells nobody
	// anything the retention does not.
	ctrl.LoggerFrom(ctx).V(1).Info("deleted finished FriendDeletion after its retention", "phase", fd.Status.Phase, "retention", keep)
	return ctrl.Result{}, nil
}

// retentionFor is how long a FriendDeletion finished in phase is kept: the
// config's retention, or the API's defaults when the config is gone.
func retentionFor(phase snsv1alpha1.Phase, cfg *snsv1alpha1.CallbackConfig) time.Duration {
	succeeded, failed := defaultRetentionSucceeded, defaultRetentionFailed
	if cfg != nil {
		if d := cfg.Spec.Retention.Succeeded; d != nil {
			succeeded = d.Duration
		}
		if d := cfg.Spec.Retention.Failed; d != nil {
			failed = d.Duration
		}
	}
	if phase == snsv1alpha1.PhaseSucceeded {
		return succeeded
	}
	return failed
}
