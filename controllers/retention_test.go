package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

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
