package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// statusPatcher writes a FriendDeletion's status as a merge patch of what
// changed since the last write, with an optimistic lock: a status computed
// from a stale read is refused (409 Conflict) instead of overwriting what an
// external step reconciler reported meanwhile.
type statusPatcher struct {
	client client.Client
	// base is the object as the API server last had it, as far as we know.
	base *snsv1alpha1.FriendDeletion
	// onWrite is called with the status before and after each write.
	onWrite func(before, after *snsv1alpha1.FriendDeletion)
	// writes, when set, is told of each write, so that its watch event
	// wakes nothing (see writeLog).
	writes *writeLog
	// missed is set when someone else wrote the object while a write was
	// in flight: its event was held back, so reconcile again.
	missed bool
}

func newStatusPatcher(c client.Client, fd *snsv1alpha1.FriendDeletion) *statusPatcher {
	return &statusPatcher{client: c, base: fd.DeepCopy()}
}

// Patch writes fd's status if it changed. On success fd holds the API
// server's answer and becomes the new base.
func (p *statusPatcher) Patch(ctx context.Context, fd *snsv1alpha1.FriendDeletion) error {
	if isSummary(p.base) || isSummary(fd) {
		// A summary lacks most of the status: a patch computed from it
		// would erase what it lacks. Reaching here is a bug.
		return fmt.Errorf("refusing to write the status of FriendDeletion %s/%s from the cache's summary of it: read it from the API server",
			fd.Namespace, fd.Name)
	}
	if equality.Semantic.DeepEqual(p.base.Status, fd.Status) {
		return nil
	}
	key := client.ObjectKeyFromObject(fd)
	if p.writes != nil {
		p.writes.begin(key)
	}
	err := p.client.Status().Patch(ctx, fd, client.MergeFromWithOptions(p.base, client.MergeFromWithOptimisticLock{}))
	if p.writes != nil {
		rv := fd.ResourceVersion
		if err != nil {
			rv = ""
		}
		p.missed = p.writes.end(key, rv) || p.missed
	}
	if err != nil {
		return err
	}
	before := p.base
	p.base = fd.DeepCopy()
	countFinished(before, p.base)
	if p.onWrite != nil {
		p.onWrite(before, p.base)
	}
	return nil
}

// Rebase makes fresh, a newer copy read from the API server, the base of
// the next Patch.
func (p *statusPatcher) Rebase(fresh *snsv1alpha1.FriendDeletion) {
	p.base = fresh.DeepCopy()
}
