package controllers

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unsafe"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// retainedFriendDeletion is a finished FriendDeletion with every field the
// API has set, as the cache receives it.
func retainedFriendDeletion(name string) *snsv1alpha1.FriendDeletion {
	t := metav1.NewTime(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	return &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "im", Name: name, UID: "uid-" + "name", ResourceVersion: "42", Generation: 1, CreationTimestamp: t,
			Labels:        map[string]string{snsv1alpha1.LabelConfig: "app", snsv1alpha1.LabelSDKAppID: "1400000001"},
			Annotations:   map[string]string{"note": "kept"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "receiver", Operation: metav1.ManagedFieldsOperationUpdate}},
		},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: "app", SDKAppID: "1400000001", PairCount: 1,
			Pairs:    []snsv1alpha1.FriendPair{{From: "alice-" + name, To: "bob"}},
			ClientIP: "203.0.113.7", OptPlatform: "RESTAPI", RequestID: "req-" + name, ReceivedAt: t,
		},
		Status: snsv1alpha1.FriendDeletionStatus{
			ObservedGeneration: 1, Phase: snsv1alpha1.PhaseSucceeded, CompletionTime: &t,
			Steps: []snsv1alpha1.StepStatus{
				{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseSucceeded, Attempts: 1,
					Message: "Job " + name + "-purge completed.", JobName: name + "-purge", StartTime: &t, CompletionTime: &t},
				{Name: "notify", Type: snsv1alpha1.StepTypeHTTP, Phase: snsv1alpha1.PhaseSucceeded, Attempts: 1,
					Message: "Attempt 1 of 5 succeeded.", Request: "POST http://sink.im.svc/deleted", StartTime: &t, CompletionTime: &t},
				{Name: "audit", Type: snsv1alpha1.StepTypeExternal, Phase: snsv1alpha1.PhaseSucceeded, Checkpoint: `{"page":3}`,
					NextAttemptTime: &t, StartTime: &t, CompletionTime: &t},
			},
			Conditions: []metav1.Condition{
				{Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: t,
					Reason: snsv1alpha1.ReasonSucceeded, Message: "All 3 cleanup steps succeeded."},
				{Type: snsv1alpha1.StepConditionType("purge"), Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: t,
					Reason: snsv1alpha1.ReasonSucceeded, Message: "Job " + name + "-purge completed."},
			},
		},
	}
}

// runningFriendDeletion is retainedFriendDeletion before its last step
// finished: phase Running, no completionTime.
func runningFriendDeletion(name string) *snsv1alpha1.FriendDeletion {
	fd := retainedFriendDeletion(name)
	fd.Status.Phase, fd.Status.CompletionTime = snsv1alpha1.PhaseRunning, nil
	fd.Status.Steps[2].Phase, fd.Status.Steps[2].CompletionTime = snsv1alpha1.PhaseRunning, nil
	return fd
}

// decoded is fd as the cache gets it: decoded from the API server's JSON,
// every string its own copy.
func decoded(t *testing.T, fd *snsv1alpha1.FriendDeletion) *snsv1alpha1.FriendDeletion {
	t.Helper()
	b, err := json.Marshal(fd)
	if err != nil {
		t.Fatal(err)
	}
	out := &snsv1alpha1.FriendDeletion{}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSlimFriendDeletionKeepsEveryFieldOfAnUnfinishedOneButManagedFields(t *testing.T) {
	in := decoded(t, runningFriendDeletion("fd-1"))
	want := in.DeepCopy()
	want.ManagedFields = nil
	got, err := slimFriendDeletion(in)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("transform changed the object:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestSlimFriendDeletionSharesRepeatedStrings(t *testing.T) {
	a, b := decoded(t, runningFriendDeletion("fd-1")), decoded(t, runningFriendDeletion("fd-2"))
	if _, err := slimFriendDeletion(a); err != nil {
		t.Fatal(err)
	}
	if _, err := slimFriendDeletion(b); err != nil {
		t.Fatal(err)
	}
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	for what, pair := range map[string][2]string{
		"namespace":         {a.Namespace, b.Namespace},
		"config label":      {a.Labels[snsv1alpha1.LabelConfig], b.Labels[snsv1alpha1.LabelConfig]},
		"spec.configName":   {a.Spec.ConfigName, b.Spec.ConfigName},
		"spec.sdkAppID":     {a.Spec.SDKAppID, b.Spec.SDKAppID},
		"status.phase":      {string(a.Status.Phase), string(b.Status.Phase)},
		"step name":         {a.Status.Steps[1].Name, b.Status.Steps[1].Name},
		"step message":      {a.Status.Steps[1].Message, b.Status.Steps[1].Message},
		"step request":      {a.Status.Steps[1].Request, b.Status.Steps[1].Request},
		"condition type":    {a.Status.Conditions[1].Type, b.Status.Conditions[1].Type},
		"condition reason":  {a.Status.Conditions[0].Reason, b.Status.Conditions[0].Reason},
		"condition message": {a.Status.Conditions[0].Message, b.Status.Conditions[0].Message},
		"condition status":  {string(a.Status.Conditions[0].Status), string(b.Status.Conditions[0].Status)},
	} {
		if !same(pair[0], pair[1]) {
			t.Errorf("%s %q: two cached FriendDeletions hold two copies", what, pair[0])
		}
	}
	if reflect.ValueOf(a.Labels).UnsafePointer() != reflect.ValueOf(b.Labels).UnsafePointer() {
		t.Error("two cached FriendDeletions with the same labels hold two labels maps")
	}
	// What a reader gets is its own.
	c := a.DeepCopy()
	c.Labels["changed"] = "yes"
	if _, ok := b.Labels["changed"]; ok {
		t.Error("a deep copy's labels write through to another cached FriendDeletion")
	}
	other := decoded(t, runningFriendDeletion("fd-3"))
	other.Labels[snsv1alpha1.LabelConfig] = "another"
	if _, err := slimFriendDeletion(other); err != nil {
		t.Fatal(err)
	}
	if other.Labels[snsv1alpha1.LabelConfig] != "another" || a.Labels[snsv1alpha1.LabelConfig] != "app" {
		t.Errorf("labels of different configs mixed: %v, %v", other.Labels, a.Labels)
	}
	// Sharing never merges strings that differ.
	if a.Status.Steps[0].Message == b.Status.Steps[0].Message || a.Spec.Pairs[0].From == b.Spec.Pairs[0].From {
		t.Errorf("distinct strings became equal: %q %q", a.Status.Steps[0].Message, b.Status.Steps[0].Message)
	}
}

func TestSlimFriendDeletionLeavesOtherKindsAlone(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}}
	got, err := slimFriendDeletion(job)
	if err != nil || got != any(job) || len(job.ManagedFields) != 1 {
		t.Errorf("slimFriendDeletion(Job) = %v, %v; want the Job untouched", got, err)
	}
}

func TestSlimFriendDeletionKeepsTheSummaryOfAFinishedOne(t *testing.T) {
	for _, phase := range []snsv1alpha1.Phase{snsv1alpha1.PhaseSucceeded, snsv1alpha1.PhaseFailed} {
		t.Run(string(phase), func(t *testing.T) {
			full := retainedFriendDeletion("fd-1")
			full.Status.Phase = phase
			del := metav1.NewTime(full.CreationTimestamp.Add(time.Hour))
			full.DeletionTimestamp, full.Finalizers = &del, []string{"example.com/hold"}
			full.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "owner-uid"}}
			got, err := slimFriendDeletion(decoded(t, full))
			if err != nil {
				t.Fatal(err)
			}
			summary := got.(*snsv1alpha1.FriendDeletion)
			want := &snsv1alpha1.FriendDeletion{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: "im", Name: "fd-1", UID: full.UID, ResourceVersion: "42", Generation: 1,
					CreationTimestamp: full.CreationTimestamp, DeletionTimestamp: &del,
					Labels:          full.Labels,
					Annotations:     map[string]string{"note": "kept", summaryAnnotation: "true"},
					OwnerReferences: full.OwnerReferences, Finalizers: full.Finalizers,
				},
				Spec: snsv1alpha1.FriendDeletionSpec{ConfigName: "app", SDKAppID: "1400000001", PairCount: 1, ReceivedAt: full.Spec.ReceivedAt},
				Status: snsv1alpha1.FriendDeletionStatus{
					ObservedGeneration: 1, Phase: phase, CompletionTime: full.Status.CompletionTime,
					Steps: []snsv1alpha1.StepStatus{
						{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseSucceeded, Attempts: 1, JobName: "fd-1-purge"},
						{Name: "notify", Type: snsv1alpha1.StepTypeHTTP, Phase: snsv1alpha1.PhaseSucceeded, Attempts: 1},
						{Name: "audit", Type: snsv1alpha1.StepTypeExternal, Phase: snsv1alpha1.PhaseSucceeded},
					},
				},
			}
			if !equality.Semantic.DeepEqual(summary, want) {
				t.Errorf("summary:\ngot  %+v\nwant %+v", summary, want)
			}
			if !isSummary(summary) || isSummary(full) {
				t.Errorf("isSummary: %v for the summary, %v for the full object", isSummary(summary), isSummary(full))
			}
			// The informer may transform an object twice; a summary of a
			// summary is the same summary.
			again, err := slimFriendDeletion(summary.DeepCopy())
			if err != nil || !equality.Semantic.DeepEqual(again, want) {
				t.Errorf("summary of the summary: %+v, %v", again, err)
			}
		})
	}
}

func TestSlimFriendDeletionSummariesShareTheirAnnotations(t *testing.T) {
	a, b := decoded(t, retainedFriendDeletion("fd-1")), decoded(t, retainedFriendDeletion("fd-2"))
	a.Annotations, b.Annotations = nil, nil
	sa, _ := slimFriendDeletion(a)
	sb, _ := slimFriendDeletion(b)
	pa, pb := sa.(*snsv1alpha1.FriendDeletion).Annotations, sb.(*snsv1alpha1.FriendDeletion).Annotations
	if reflect.ValueOf(pa).UnsafePointer() != reflect.ValueOf(pb).UnsafePointer() {
		t.Error("two summaries without annotations of their own hold two annotations maps")
	}
	c := sa.(*snsv1alpha1.FriendDeletion).DeepCopy()
	c.Annotations["changed"] = "yes"
	if _, ok := pb["changed"]; ok {
		t.Error("a deep copy's annotations write through to another summary")
	}
}
