package controllers

import (
	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// stepPairs is the pairs every cleanup step works on: what goes into a
// Job's pairs file and environment, an http step's body and an external
// step's view. Every step reads the pairs through it, never from the spec.
func stepPairs(fd *snsv1alpha1.FriendDeletion) []snsv1alpha1.FriendPair {
	return fd.Spec.Pairs
}

// stepsMayStart reports whether the FriendDeletion's cleanup steps may
// start. Every path that starts a step (one deletion's, or a batch's)
// asks it first.
func stepsMayStart(fd *snsv1alpha1.FriendDeletion) bool {
	return fd != nil
}
