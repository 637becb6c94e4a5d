package controllers

import (
	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// stepPairs is the pairs every cleanup step works on: what goes into a
// Job's pairs file and environment, an http step's body and an external
// step's view (cleanup.Step.Pairs). Every step reads the pairs through it,
// never from the spec. When the config verifies pairs, these are only the
// pairs the IM backend confirmed gone (see verify.go).
func stepPairs(fd *snsv1alpha1.FriendDeletion) []snsv1alpha1.FriendPair {
	return stepstatus.Pairs(fd)
}

// stepsMayStart reports whether the FriendDeletion's cleanup steps may
// start. Every path that starts a step (one deletion's, or a batch's)
// asks it first. A verified FriendDeletion's steps wait until every pair
// has an answer, and never start when none is left to clean up or the
// config's stillFriends policy failed the deletion.
func stepsMayStart(fd *snsv1alpha1.FriendDeletion) bool {
	if fd == nil || fd.Status.Phase.Finished() {
		return false
	}
	if !stepstatus.VerificationDone(fd) {
		return false
	}
	v := fd.Status.Verification
	return v == nil || (v.Cleared > 0 && !verificationEnded(fd))
}
