package controllers

import (
	"slices"
	"strings"
	"sync"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// slimFriendDeletion is the cache's transform of FriendDeletions. A manager
// holds every FriendDeletion of its namespaces, finished ones included until
// their retention ends: tens of thousands on a busy app.
//
// An unfinished FriendDeletion keeps every field (reconcilers summarize and
// patch the status of what they read, so a dropped field could be written
// back wrong) but managedFields, which the cache strips from every kind.
//
// A finished one (phase Succeeded or Failed) is reduced to its summary
// (see finishedSummary): what the retention, the clean-up of finished Jobs,
// the metrics and the watches read. Nothing writes the status of a
// finished FriendDeletion; the status patcher refuses one marked as a
// summary (annotation summaryAnnotation), so that a summary is never
// written back over the stored object. Read a finished FriendDeletion from
// the API server (APIReader) for its full status.
//
// Both share the strings that repeat from one FriendDeletion to the next
// (namespace, labels, config, step and condition names, reasons, phases,
// common messages): one copy instead of one per object, as decoded from
// JSON. FriendDeletions with the same labels (those of one config) share one
// labels map. Objects read from the cache are deep copies (the client's
// default), and nothing writes to the cache's own objects, so sharing is
// invisible to readers.
func slimFriendDeletion(obj any) (any, error) {
	fd, ok := obj.(*snsv1alpha1.FriendDeletion)
	if !ok {
		return obj, nil
	}
	if isSummary(fd) {
		return fd, nil // transformed already (the informer may transform twice)
	}
	if fd.Status.Phase.Finished() {
		return finishedSummary(fd), nil
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

// summaryAnnotation marks a FriendDeletion that the cache holds as its
// summary (finishedSummary). It exists only in the manager's memory: the
// API server never sees it, as nothing writes a summary.
const summaryAnnotation = "sns.imcallback.io/cached-summary"

// isSummary reports whether fd is a finished FriendDeletion's summary, as
// the cache holds it, rather than the whole object.
func isSummary(fd *snsv1alpha1.FriendDeletion) bool {
	_, ok := fd.Annotations[summaryAnnotation]
	return ok
}

// finishedSummary is what the cache keeps of a finished FriendDeletion:
//   - metadata but managedFields (name, namespace, uid, resourceVersion,
//     generation, creation and deletion timestamps, labels, annotations,
//     owners, finalizers), and summaryAnnotation;
//   - spec.configName, sdkAppID, pairCount and receivedAt, not the pairs
//     nor the callback's query parameters;
//   - status.phase, observedGeneration and completionTime, and each step's
//     name, type, phase, attempts and jobName, not their messages, requests,
//     times and checkpoints, nor the conditions.
//
// That is what retention (age and count), the deletion of finished Jobs,
// the FriendDeletion metrics, the watches' filters and external step
// reconcilers (which act on Running steps only) read.
func finishedSummary(fd *snsv1alpha1.FriendDeletion) *snsv1alpha1.FriendDeletion {
	out := &snsv1alpha1.FriendDeletion{
		TypeMeta: fd.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:                       fd.Name,
			Namespace:                  intern(fd.Namespace),
			UID:                        fd.UID,
			ResourceVersion:            fd.ResourceVersion,
			Generation:                 fd.Generation,
			CreationTimestamp:          fd.CreationTimestamp,
			DeletionTimestamp:          fd.DeletionTimestamp,
			DeletionGracePeriodSeconds: fd.DeletionGracePeriodSeconds,
			Labels:                     labelSets.share(fd.Labels),
			Annotations:                summaryAnnotations(fd.Annotations),
			OwnerReferences:            fd.OwnerReferences,
			Finalizers:                 fd.Finalizers,
		},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: intern(fd.Spec.ConfigName),
			SDKAppID:   intern(fd.Spec.SDKAppID),
			PairCount:  fd.Spec.PairCount,
			ReceivedAt: fd.Spec.ReceivedAt,
		},
		Status: snsv1alpha1.FriendDeletionStatus{
			ObservedGeneration: fd.Status.ObservedGeneration,
			Phase:              intern(fd.Status.Phase),
			CompletionTime:     fd.Status.CompletionTime,
		},
	}
	if len(fd.Status.Steps) > 0 {
		out.Status.Steps = make([]snsv1alpha1.StepStatus, len(fd.Status.Steps))
		for i, st := range fd.Status.Steps {
			out.Status.Steps[i] = snsv1alpha1.StepStatus{
				Name: intern(st.Name), Type: intern(st.Type), Phase: intern(st.Phase),
				Attempts: st.Attempts, JobName: st.JobName,
			}
		}
	}
	return out
}

// summaryOnly is the annotations of a summary without other annotations.
var summaryOnly = map[string]string{summaryAnnotation: "true"}

// summaryAnnotations is a summary's annotations: the object's own (interned)
// and summaryAnnotation.
func summaryAnnotations(m map[string]string) map[string]string {
	if _, marked := m[summaryAnnotation]; len(m) == 0 || (marked && len(m) == 1) {
		return summaryOnly
	}
	out := internMap(m)
	out[summaryAnnotation] = "true"
	return out
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
