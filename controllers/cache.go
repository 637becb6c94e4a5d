package controllers

import (
	"slices"
	"strings"
	"sync"
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
// FriendDeletions with the same labels (those of one config) share one
// labels map. Objects read from the cache are deep copies (the client's
// default), and nothing writes to the cache's own objects, so sharing is
// invisible to readers.
func slimFriendDeletion(obj any) (any, error) {
	fd, ok := obj.(*snsv1alpha1.FriendDeletion)
	if !ok {
		return obj, nil
	}
	fd.ManagedFields = nil
	fd.Namespace = intern(fd.Namespace)
	fd.Labels = labelSets.share(fd.Labels)
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

// labelSets holds one map per distinct set of labels, up to maxLabelSets;
// past that, further sets are interned but not shared.
var labelSets = &sharedMaps{maps: map[string]map[string]string{}}

const maxLabelSets = 4096

// sharedMaps hands out one map per distinct content. Transforms of several
// informers (one per watched namespace) may call it at once.
type sharedMaps struct {
	mu   sync.Mutex
	maps map[string]map[string]string
}

// share returns the shared map with m's content, or m's content interned
// when too many distinct maps are held already.
func (s *sharedMaps) share(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	id := b.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if shared, ok := s.maps[id]; ok {
		return shared
	}
	interned := internMap(m)
	if len(s.maps) < maxLabelSets {
		s.maps[id] = interned
	}
	return interned
}
