package stepstatus

import (
	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Pairs is the pairs a FriendDeletion's cleanup steps work on: all of
// spec.pairs, or, when its config verifies pairs (status.verification is
// set), only those the IM backend confirmed gone (relation N). Until the
// verification is complete that is none.
func Pairs(fd *snsv1alpha1.FriendDeletion) []snsv1alpha1.FriendPair {
	v := fd.Status.Verification
	if v == nil {
		return fd.Spec.Pairs
	}
	if len(v.Relations) != len(fd.Spec.Pairs) {
		return nil // not this spec's verification: trust none
	}
	out := make([]snsv1alpha1.FriendPair, 0, v.Cleared)
	for i, p := range fd.Spec.Pairs {
		if v.Relations[i] == snsv1alpha1.RelationNone {
			out = append(out, p)
		}
	}
	return out
}

// VerificationDone reports whether the FriendDeletion needs no (more)
// verification before its steps: its config did not verify when it was
// first seen, or every pair has an answer.
func VerificationDone(fd *snsv1alpha1.FriendDeletion) bool {
	v := fd.Status.Verification
	return v == nil || v.CompletionTime != nil
}
