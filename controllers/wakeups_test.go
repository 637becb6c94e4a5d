package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// TestWakeups: which FriendDeletion updates reconcile it. Its own status
// writes do not; anyone else's, a spec change, a deletion and the request
// annotation do.
func TestWakeups(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "fd1"}
	base := func(rv string) *snsv1alpha1.FriendDeletion {
		fd := newFriendDeletion("ns", "fd1", "app")
		fd.ResourceVersion, fd.Generation = rv, 1
		return fd
	}
	for _, tc := range []struct {
		name   string
		own    string // the resourceVersion of the reconciler's last write
		change func(fd *snsv1alpha1.FriendDeletion)
		want   bool
	}{
		{"own status write", "2", func(fd *snsv1alpha1.FriendDeletion) { fd.Status.Phase = snsv1alpha1.PhaseRunning }, false},
		{"a status write by someone else (an external step's report)", "", func(fd *snsv1alpha1.FriendDeletion) { fd.Status.Phase = snsv1alpha1.PhaseRunning }, true},
		{"a write after our own", "1", func(fd *snsv1alpha1.FriendDeletion) {}, true},
		{"spec changed", "2", func(fd *snsv1alpha1.FriendDeletion) { fd.Generation = 2 }, true},
		{"request annotation", "2", func(fd *snsv1alpha1.FriendDeletion) {
			fd.Annotations = map[string]string{requestAnnotation: "1700000000"}
		}, true},
		{"being deleted", "2", func(fd *snsv1alpha1.FriendDeletion) { now := metav1.Now(); fd.DeletionTimestamp = &now }, true},
		{"resync", "", func(fd *snsv1alpha1.FriendDeletion) { fd.ResourceVersion = "1" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			r := &FriendDeletionReconciler{}
			if tc.own != "" {
				r.ownWrites().begin(key)
				r.ownWrites().end(key, tc.own)
			}
			o, n := base("1"), base("2")
			tc.change(n)
			g.Expect(r.wakeups().Update(ctrlevent.UpdateEvent{ObjectOld: o, ObjectNew: n})).To(Equal(tc.want))
			// An own write is recognised once only.
			g.Expect(r.ownWrites().consume(key, tc.own)).To(BeFalse())
		})
	}
	g := NewWithT(t)
	r := &FriendDeletionReconciler{}
	g.Expect(r.wakeups().Create(ctrlevent.CreateEvent{Object: base("1")})).To(BeTrue())
	r.ownWrites().begin(key)
	r.ownWrites().end(key, "5")
	r.jobDeletions().note(key, "fd1-purge")
	g.Expect(r.wakeups().Delete(ctrlevent.DeleteEvent{Object: base("5")})).To(BeFalse())
	g.Expect(r.ownWrites().m).To(BeEmpty(), "a deleted FriendDeletion leaves nothing behind")
	g.Expect(r.jobDeletions().jobs).To(BeEmpty())
}

// TestJobNews: which Job updates reconcile its FriendDeletion: those that
// change what the step shows.
func TestJobNews(t *testing.T) {
	job := func(mut func(*batchv1.Job)) *batchv1.Job {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j"}}
		mut(j)
		return j
	}
	none := func(*batchv1.Job) {}
	for _, tc := range []struct {
		name     string
		old, new func(*batchv1.Job)
		want     bool
	}{
		{"pods start", none, func(j *batchv1.Job) { j.Status.Active, j.Status.Ready = 1, ptrInt32(1) }, false},
		{"a pod failed", none, func(j *batchv1.Job) { j.Status.Failed = 1 }, true},
		{"completed", func(j *batchv1.Job) { j.Status.Active = 1 }, func(j *batchv1.Job) {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
		}, true},
		{"success criteria met, not yet complete", none, func(j *batchv1.Job) {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue}}
		}, false},
		{"failed", none, func(j *batchv1.Job) {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded"}}
		}, true},
		{"being deleted", none, func(j *batchv1.Job) { now := metav1.Now(); j.DeletionTimestamp = &now }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(jobNewsChanged(job(tc.old), job(tc.new))).To(Equal(tc.want))
		})
		t.Run(tc.name+", first seen so", func(t *testing.T) {
			// The Job's create event: compared with a Job without status.
			fresh := job(tc.new)
			NewWithT(t).Expect(jobNewsChanged(&batchv1.Job{ObjectMeta: fresh.ObjectMeta}, fresh)).To(Equal(tc.want))
		})
	}
}

// TestWriteLogEventDuringAWrite: events that arrive while a write is in
// flight are held back; the write's own is forgotten, anyone else's makes
// the writer reconcile again.
func TestWriteLogEventDuringAWrite(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "fd1"}
	for _, tc := range []struct {
		name       string
		held       []string
		rv         string // what the write left; "" when it failed
		wantMissed bool
		wantLeft   bool // the write's own event is still to come
	}{
		{"own event after the write", nil, "5", false, true},
		{"own event during the write", []string{"5"}, "5", false, false},
		{"someone else's write during ours", []string{"4"}, "5", true, true},
		{"both", []string{"5", "6"}, "5", true, false},
		{"failed write, someone else wrote", []string{"4"}, "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			w := &writeLog{m: map[types.NamespacedName]*writeEntry{}}
			w.begin(key)
			for _, rv := range tc.held {
				g.Expect(w.consume(key, rv)).To(BeTrue(), "held back")
			}
			g.Expect(w.end(key, tc.rv)).To(Equal(tc.wantMissed))
			g.Expect(w.m).To(HaveLen(map[bool]int{true: 1, false: 0}[tc.wantLeft]))
			if tc.wantLeft {
				g.Expect(w.consume(key, tc.rv)).To(BeTrue(), "own event wakes nothing")
			}
			g.Expect(w.consume(key, "7")).To(BeFalse(), "a later write by someone else wakes")
		})
	}
}

// TestWriteLogTwoWritesInOneReconcile: a reconcile that writes twice (the
// intent before a Job, then the Job created) knows both writes as its own,
// whichever order their events come in, and a reconcile reading the cache
// before it shows the last one waits.
func TestWriteLogTwoWritesInOneReconcile(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "fd1"}
	now := time.Now()
	for _, tc := range []struct {
		name     string
		early    []string // events that arrive during the second write
		wantMiss bool
		events   []string // events after both writes, each must be own
	}{
		{"both events after the writes", nil, false, []string{"5", "6"}},
		{"the first write's event during the second", []string{"5"}, false, []string{"6"}},
		{"only the last event arrives (coalesced)", nil, false, []string{"6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			w := &writeLog{m: map[types.NamespacedName]*writeEntry{}}
			w.begin(key)
			g.Expect(w.end(key, "5")).To(BeFalse())
			g.Expect(w.lagging(key, "4", now)).To(BeTrue(), "the cache shows neither write")
			w.begin(key)
			for _, rv := range tc.early {
				g.Expect(w.consume(key, rv)).To(BeTrue(), "held back")
			}
			g.Expect(w.end(key, "6")).To(Equal(tc.wantMiss), "the first write's event is ours, not someone else's")
			g.Expect(w.lagging(key, "5", now)).To(BeTrue(), "the cache shows the first write only")
			g.Expect(w.lagging(key, "6", now)).To(BeFalse(), "the cache shows the last write")
			for _, rv := range tc.events {
				g.Expect(w.consume(key, rv)).To(BeTrue(), "own write %s wakes nothing", rv)
			}
			g.Expect(w.m).To(BeEmpty())
			g.Expect(w.lagging(key, "6", now)).To(BeFalse())
		})
	}
}

// TestWriteLogLagging: a reconcile waits while the cache shows a status
// older than the reconciler's own write, and only then.
func TestWriteLogLagging(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "fd1"}
	now := time.Now()
	for _, tc := range []struct {
		name     string
		write    string // what the last write left; "" for no write at all
		inFlight bool
		cached   string
		after    time.Duration // since the write returned
		want     bool
	}{
		{"no write of ours", "", false, "4", 0, false},
		{"cache shows our write", "5", false, "5", 0, false},
		{"cache older than our write", "5", false, "4", 0, true},
		{"a write in flight", "", true, "4", 0, true},
		{"our write's event never came", "5", false, "4", maxCacheLag, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			w := &writeLog{m: map[types.NamespacedName]*writeEntry{}}
			if tc.write != "" {
				w.begin(key)
				w.end(key, tc.write)
				w.m[key].ownAt = now.Add(-tc.after)
			}
			if tc.inFlight {
				w.begin(key)
			}
			g.Expect(w.lagging(key, tc.cached, now)).To(Equal(tc.want))
		})
	}
}

func ptrInt32(v int32) *int32 { return &v }
