package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func TestRetentionDeletesFinishedFriendDeletions(t *testing.T) {
	ns := env.Namespace(t)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	opts := testOptions()
	opts.Clock = clk
	startManager(t, ns, opts)
	cfg := newConfig(ns, "app", jobStep("purge"))
	cfg.Spec.Retention = snsv1alpha1.Retention{
		Succeeded: &metav1.Duration{Duration: time.Hour},
		Failed:    &metav1.Duration{Duration: 3 * time.Hour},
	}
	create(t, cfg, newFriendDeletion(ns, "ok", "app"), newFriendDeletion(ns, "bad", "app"))
	setJobStatus(t, getJob(t, ns, "ok-purge"), "complete")
	setJobStatus(t, getJob(t, ns, "bad-purge"), "failed")
	waitForPhase(t, ns, "ok", snsv1alpha1.PhaseSucceeded)
	waitForPhase(t, ns, "bad", snsv1alpha1.PhaseFailed)

	exists := func(g Gomega, name string) bool {
		err := env.Client.Get(t.Context(), nsName(ns, name), &snsv1alpha1.FriendDeletion{})
		if apierrors.IsNotFound(err) {
			return false
		}
		g.Expect(err).NotTo(HaveOccurred())
		return true
	}
	g := gt(t)

	// Within the retention both stay.
	clk.Step(59 * time.Minute)
	poke(t, ns, "ok")
	poke(t, ns, "bad")
	g.Consistently(func(g Gomega) {
		g.Expect(exists(g, "ok")).To(BeTrue())
		g.Expect(exists(g, "bad")).To(BeTrue())
	}).Should(Succeed())

	// Past the Succeeded retention, only the succeeded one goes.
	clk.Step(2 * time.Minute)
	poke(t, ns, "ok")
	poke(t, ns, "bad")
	g.Eventually(func(g Gomega) bool { return exists(g, "ok") }).Should(BeFalse())
	g.Expect(exists(g, "bad")).To(BeTrue())

	clk.Step(2 * time.Hour)
	poke(t, ns, "bad")
	g.Eventually(func(g Gomega) bool { return exists(g, "bad") }).Should(BeFalse())
}

// TestCountRetentionDeletesTheOldestFirst finishes four FriendDeletions
// Succeeded and three Failed, a minute apart, under maxSucceeded 2 and
// maxFailed 1: the oldest finished go first, the newest stay, and the
// age retention (24h) has nothing to do with it.
func TestCountRetentionDeletesTheOldestFirst(t *testing.T) {
	ns := env.Namespace(t)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	opts := testOptions()
	opts.Clock = clk
	startManager(t, ns, opts)
	cfg := newConfig(ns, "app", jobStep("purge"))
	cfg.Spec.Retention = snsv1alpha1.Retention{MaxSucceeded: ptr.To[int32](2), MaxFailed: ptr.To[int32](1)}
	create(t, cfg)

	// In an order that is not the names' order: ok-c finishes first.
	order := []struct{ name, outcome string }{
		{"ok-c", "complete"}, {"bad-a", "failed"}, {"ok-a", "complete"}, {"bad-c", "failed"},
		{"ok-d", "complete"}, {"bad-b", "failed"}, {"ok-b", "complete"},
	}
	for _, o := range order {
		create(t, newFriendDeletion(ns, o.name, "app"))
		setJobStatus(t, getJob(t, ns, o.name+"-purge"), o.outcome)
		phase := snsv1alpha1.PhaseSucceeded
		if o.outcome == "failed" {
			phase = snsv1alpha1.PhaseFailed
		}
		waitForPhase(t, ns, o.name, phase)
		clk.Step(time.Minute)
	}
	g := gt(t)
	g.Eventually(func(g Gomega) []string {
		var list snsv1alpha1.FriendDeletionList
		g.Expect(env.Client.List(t.Context(), &list, client.InNamespace(ns))).To(Succeed())
		var names []string
		for _, fd := range list.Items {
			if fd.DeletionTimestamp.IsZero() {
				names = append(names, fd.Name)
			}
		}
		return names
	}).Should(ConsistOf("ok-d", "ok-b", "bad-b"))
}

// TestOldestBeyond: which finished FriendDeletions a count limit deletes.
func TestOldestBeyond(t *testing.T) {
	at := func(name string, minute int) *snsv1alpha1.FriendDeletion {
		fd := &snsv1alpha1.FriendDeletion{}
		fd.Name = name
		ts := metav1.NewTime(time.Unix(0, 0).Add(time.Duration(minute) * time.Minute))
		fd.Status.CompletionTime = &ts
		return fd
	}
	names := func(fds []*snsv1alpha1.FriendDeletion) []string {
		var out []string
		for _, fd := range fds {
			out = append(out, fd.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		items []*snsv1alpha1.FriendDeletion
		limit int
		want  []string
	}{
		{"under the limit", []*snsv1alpha1.FriendDeletion{at("a", 1)}, 2, nil},
		{"at the limit", []*snsv1alpha1.FriendDeletion{at("a", 1), at("b", 2)}, 2, nil},
		{"oldest first", []*snsv1alpha1.FriendDeletion{at("c", 3), at("a", 5), at("b", 1)}, 1, []string{"b", "c"}},
		{"ties by name", []*snsv1alpha1.FriendDeletion{at("b", 1), at("a", 1), at("c", 2)}, 1, []string{"a", "b"}},
		{"zero keeps none", []*snsv1alpha1.FriendDeletion{at("a", 1), at("b", 2)}, 0, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(names(oldestBeyond(tc.items, tc.limit))).To(Equal(tc.want))
		})
	}
}
