package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"
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
// asks to be called again then; first it applies the config's count
// limits (reconcileCountRetention). Its Jobs (with their pods) and ConfigMaps
// are deleted by the garbage collector through their owner references.
func (r *FriendDeletionReconciler) reconcileRetention(ctx context.Context, fd *snsv1alpha1.FriendDeletion) (ctrl.Result, error) {
	if fd.Status.CompletionTime == nil {
		return ctrl.Result{}, nil
	}
	cfg, err := r.getConfig(ctx, fd)
	if err != nil {
		return ctrl.Result{}, err
	}
	countRes, err := r.reconcileCountRetention(ctx, fd, cfg)
	if err != nil {
		return ctrl.Result{}, err
	}
	keep := retentionFor(fd.Status.Phase, cfg)
	if wait := fd.Status.CompletionTime.Add(keep).Sub(r.Options.Clock.Now()); wait > 0 {
		return minResult(ctrl.Result{RequeueAfter: wait}, countRes), nil
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

// countSweepInterval is the shortest time between two count retention
// sweeps of one config and phase: in a burst of deletions finishing, one
// sweep covers all that finished before it.
const countSweepInterval = time.Second

// countSweeps remembers when each config's finished FriendDeletions of a
// phase were last swept for count retention.
type countSweeps struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// reconcileCountRetention applies the config's maxSucceeded or maxFailed
// for fd's phase: when more FriendDeletions of the config finished in that
// phase, the oldest (by completionTime, then name) are deleted first, as
// CronJob's history limits do. A sweep lists the config's FriendDeletions
// through the field index; it runs at most once per countSweepInterval per
// config and phase, and a FriendDeletion finished after the last sweep
// asks to be reconciled again when the next may run.
func (r *FriendDeletionReconciler) reconcileCountRetention(ctx context.Context, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig) (ctrl.Result, error) {
	limit := maxFinished(fd.Status.Phase, cfg)
	if limit == nil {
		return ctrl.Result{}, nil
	}
	key := fd.Namespace + "/" + fd.Spec.ConfigName + "/" + string(fd.Status.Phase)
	now := r.Options.Clock.Now()
	r.sweepsOnce.Do(func() { r.sweeps = &countSweeps{last: map[string]time.Time{}} })
	r.sweeps.mu.Lock()
	last := r.sweeps.last[key]
	switch {
	case last.After(fd.Status.CompletionTime.Add(time.Second)): // completionTime is cut to the second
		r.sweeps.mu.Unlock()
		return ctrl.Result{}, nil // swept since it finished
	case now.Sub(last) < countSweepInterval:
		r.sweeps.mu.Unlock()
		return ctrl.Result{RequeueAfter: countSweepInterval - now.Sub(last)}, nil
	}
	r.sweeps.last[key] = now
	r.sweeps.mu.Unlock()

	// Read only, without deep copies: a sweep sees every retained
	// FriendDeletion of the config, tens of thousands at start-up.
	var list snsv1alpha1.FriendDeletionList
	if err := r.List(ctx, &list, client.InNamespace(fd.Namespace), client.MatchingFields{indexConfigName: fd.Spec.ConfigName},
		client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing FriendDeletions of config %s: %w", fd.Spec.ConfigName, err)
	}
	finished := make([]*snsv1alpha1.FriendDeletion, 0, len(list.Items))
	for i := range list.Items {
		item := &list.Items[i]
		if item.Name == fd.Name {
			item = fd // the cache may not have its finishing write yet
		}
		if item.Status.Phase == fd.Status.Phase && item.Status.CompletionTime != nil && item.DeletionTimestamp.IsZero() {
			finished = append(finished, item)
		}
	}
	excess := oldestBeyond(finished, int(*limit))
	for _, old := range excess {
		err := r.Delete(ctx, old, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &old.UID})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return ctrl.Result{}, fmt.Errorf("deleting %s beyond the count retention: %w", old.Name, err)
		}
	}
	if len(excess) > 0 {
		ctrl.LoggerFrom(ctx).V(1).Info("deleted the oldest finished FriendDeletions beyond the count retention",
			"phase", fd.Status.Phase, "max", *limit, "deleted", len(excess))
	}
	return ctrl.Result{}, nil
}

// maxFinished is the config's count limit for FriendDeletions finished in
// phase, or nil for none.
func maxFinished(phase snsv1alpha1.Phase, cfg *snsv1alpha1.CallbackConfig) *int32 {
	if cfg == nil {
		return nil
	}
	if phase == snsv1alpha1.PhaseSucceeded {
		return cfg.Spec.Retention.MaxSucceeded
	}
	return cfg.Spec.Retention.MaxFailed
}

// oldestBeyond returns the finished FriendDeletions to delete so that at
// most limit remain: the oldest by completionTime, then by name.
func oldestBeyond(finished []*snsv1alpha1.FriendDeletion, limit int) []*snsv1alpha1.FriendDeletion {
	if len(finished) <= limit {
		return nil
	}
	sort.Slice(finished, func(i, j int) bool {
		a, b := finished[i].Status.CompletionTime, finished[j].Status.CompletionTime
		if !a.Equal(b) {
			return a.Before(b)
		}
		return finished[i].Name < finished[j].Name
	})
	return finished[:len(finished)-limit]
}
