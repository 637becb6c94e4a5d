package controllers

import (
	"unique"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// slimFriendDeletion is the cache's transform of FriendDeletions. A manager
// holds every FriendDeletion of its namespaces, finished ones included until
// their retention ends: tens of thousands on a busy app. It keeps every
// field (reconcilers summarize and patch the status of what they read, so a
// dropped field could be written back wrong) but strips managedFields, as
// the cache does for every other kind, and makes the strings that repeat
// from one FriendDeletion to the next (namespace, labels, config, step and
// condition names, reasons, phases, common messages) share one copy
// instead of one per object, as decoded from JSON.
//
// Objects read from the cache are deep copies (the client's default), so
// sharing the strings is invisible to readers.
func slimFriendDeletion(obj any) (any, error) {
	fd, ok := obj.(*snsv1alpha1.FriendDeletion)
	if !ok {
		return obj, nil
	}
	fd.ManagedFields = nil
	fd.Namespace = intern(fd.Namespace)
	fd.Labels = internMap(fd.Labels)
	fd.Annotations = internMap(fd.Annotations)

	s := &fd.Spec
	s.ConfigName, s.SDKAppID = intern(s.ConfigName), intern(s.SDKAppID)
	s.ClientIP, s.OptPlatform = intern(s.ClientIP), intern(s.OptPlatform)

	st := &fd.Status
	st.Phase = intern(st.Phase)
	for i := range st.Steps {
		step := &st.Steps[i]
		step.Name, step.Type, step.Phase = intern(step.Name), intern(step.Type), intern(step.Phase)
		step.Message, step.Request = intern(step.Message), intern(step.Request)
	}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.Type, c.Status, c.Reason, c.Message = intern(c.Type), intern(c.Status), intern(c.Reason), intern(c.Message)
	}
	return fd, nil
}

// intern returns the canonical copy of s (unique.Make), so that equal
// strings held by many cached objects share their bytes.
func intern[S ~string](s S) S {
	if s == "" {
		return s
	}
	return S(unique.Make(string(s)).Value())
}

// internMap returns m with its keys and values interned.
func internMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[intern(k)] = intern(v)
	}
	return out
}
