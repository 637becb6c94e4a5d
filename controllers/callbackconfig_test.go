package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func getConfig(g Gomega, ns, name string) *snsv1alpha1.CallbackConfig {
	cfg := &snsv1alpha1.CallbackConfig{}
	g.Expect(env.Client.Get(context.Background(), nsName(ns, name), cfg)).To(Succeed())
	return cfg
}

func readyOf(cfg *snsv1alpha1.CallbackConfig) metav1.Condition {
	for _, c := range cfg.Status.Conditions {
		if c.Type == snsv1alpha1.ConditionReady {
			return c
		}
	}
	return metav1.Condition{}
}

func TestCallbackConfigReadyFollowsTokenSecret(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"))
	cfg.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}}
	create(t, cfg)
	g := gt(t)

	waitReady := func(status metav1.ConditionStatus, reason string) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			c := getConfig(g, ns, "app")
			g.Expect(readyOf(c)).To(SatisfyAll(HaveField("Status", status), HaveField("Reason", reason)))
			g.Expect(c.Status.WebhookPath).To(Equal("/callbacks/" + ns + "/app"))
			g.Expect(c.Status.ObservedGeneration).To(Equal(c.Generation))
		}).Should(Succeed())
	}

	waitReady(metav1.ConditionFalse, snsv1alpha1.ReasonSecretNotFound)
	g.Expect(readyOf(getConfig(g, ns, "app")).Message).To(ContainSubstring(`Secret "im-token" does not exist`))

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "im-token"}, StringData: map[string]string{"other": "x"}}
	create(t, secret)
	waitReady(metav1.ConditionFalse, snsv1alpha1.ReasonSecretKeyMissing)

	secret.StringData = map[string]string{"token": ""}
	g.Expect(env.Client.Update(t.Context(), secret)).To(Succeed())
	waitReady(metav1.ConditionFalse, snsv1alpha1.ReasonInvalidToken)

	secret.StringData = map[string]string{"token": "a-good-token"}
	g.Expect(env.Client.Update(t.Context(), secret)).To(Succeed())
	waitReady(metav1.ConditionTrue, snsv1alpha1.ReasonConfigured)

	// The receiver's fields survive this reconciler's patches, and the other
	// way round.
	c := getConfig(g, ns, "app")
	base := c.DeepCopy()
	c.Status.AcceptedCallbacks, c.Status.RejectedCallbacks = 5, 2
	c.Status.LastCallbackTime = &metav1.Time{Time: time.Now().Truncate(time.Second)}
	g.Expect(env.Client.Status().Patch(t.Context(), c, client.MergeFrom(base))).To(Succeed())

	c = getConfig(g, ns, "app")
	c.Spec.Suspend = true
	g.Expect(env.Client.Update(t.Context(), c)).To(Succeed())
	waitReady(metav1.ConditionFalse, snsv1alpha1.ReasonSuspended)
	c = getConfig(g, ns, "app")
	g.Expect(c.Status.AcceptedCallbacks).To(Equal(int64(5)))
	g.Expect(c.Status.RejectedCallbacks).To(Equal(int64(2)))
	g.Expect(c.Status.LastCallbackTime).NotTo(BeNil())

	g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, "app") }).Should(ContainElements(
		snsv1alpha1.ReasonSecretNotFound, snsv1alpha1.ReasonSecretKeyMissing, snsv1alpha1.ReasonConfigured, snsv1alpha1.ReasonSuspended))
}

func TestCallbackConfigWithoutAuthIsReady(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge")))
	gt(t).Eventually(func(g Gomega) {
		c := readyOf(getConfig(g, ns, "app"))
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Message).To(ContainSubstring("Callback authentication is off."))
	}).Should(Succeed())
}

// TestConfigDeletedWhileRunning: the running Job step is followed to its
// end, the steps after it fail with ConfigNotFound, and a FriendDeletion
// whose config is gone before its first reconcile fails at once.
func TestConfigDeletedWhileRunning(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"), externalStep("crm", 0))
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	job := getJob(t, ns, "fd1-purge")
	waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)

	g := gt(t)
	g.Expect(env.Client.Delete(t.Context(), cfg)).To(Succeed())
	g.Consistently(func(g Gomega) {
		fd := getFD(g, ns, "fd1")
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseRunning))
	}).Should(Succeed())

	setJobStatus(t, job, "complete")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	g.Expect(stepOf(g, fd, "crm").Phase).To(Equal(snsv1alpha1.PhaseFailed))
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(HaveField("Reason", snsv1alpha1.ReasonConfigNotFound), HaveField("Message", ContainSubstring(`CallbackConfig "app" was deleted.`))))

	create(t, newFriendDeletion(ns, "orphan", "app"))
	fd = waitForPhase(t, ns, "orphan", snsv1alpha1.PhaseFailed)
	g.Expect(fd.Status.Steps).To(BeEmpty())
	g.Expect(conditionOf(fd, "Ready").Reason).To(Equal(snsv1alpha1.ReasonConfigNotFound))
	g.Expect(fd.Status.CompletionTime).NotTo(BeNil())
}

// TestStepsFixedAtFirstReconcile: a step added to the config later does not
// run for a FriendDeletion already started; a removed one fails with
// StepRemoved; the remaining ones use the config's current template.
func TestStepsFixedAtFirstReconcile(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", externalStep("crm", 0), jobStep("purge"), externalStep("audit", 0))
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)

	g := gt(t)
	g.Eventually(func(g Gomega) {
		c := getConfig(g, ns, "app")
		purge := jobStep("purge")
		purge.Job.Spec.Template.Spec.Containers[0].Image = "busybox:1.37"
		c.Spec.Cleanup = []snsv1alpha1.CleanupStep{externalStep("crm", 0), purge, externalStep("added", 0)}
		g.Expect(env.Client.Update(context.Background(), c)).To(Succeed())
	}).Should(Succeed())

	g.Expect(reportOK(t, fd, "crm")).To(Succeed())
	job := getJob(t, ns, "fd1-purge")
	g.Expect(job.Spec.Template.Spec.Containers[0].Image).To(Equal("busybox:1.37"))
	setJobStatus(t, job, "complete")
	fd = waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g.Expect(fd.Status.Steps).To(HaveLen(3))
	g.Expect(stepOf(g, fd, "audit").Phase).To(Equal(snsv1alpha1.PhaseFailed))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/audit").Reason).To(Equal(snsv1alpha1.ReasonStepRemoved))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/added").Type).To(BeEmpty())
}

func TestCallbackConfigVerifyReadyFollowsTheSecretKeySecret(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"))
	cfg.Spec.Verify = &snsv1alpha1.Verify{Endpoint: "https://adminapisgp.im.qcloud.com", Identifier: "administrator",
		SecretKeyRef: snsv1alpha1.SecretKeyRef{Name: "im-app-key", Key: "secretKey"}}
	create(t, cfg)
	g := gt(t)
	waitVerifyReady := func(status metav1.ConditionStatus, reason string) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			c := getConfig(g, ns, "app")
			var vr metav1.Condition
			for _, cond := range c.Status.Conditions {
				if cond.Type == snsv1alpha1.ConditionVerifyReady {
					vr = cond
				}
			}
			g.Expect(vr).To(SatisfyAll(HaveField("Status", status), HaveField("Reason", reason)))
			// Callbacks are accepted meanwhile: deletions wait, none is lost.
			g.Expect(readyOf(c).Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())
	}
	waitVerifyReady(metav1.ConditionFalse, snsv1alpha1.ReasonSecretNotFound)

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "im-app-key"}, StringData: map[string]string{"other": "x"}}
	create(t, secret)
	waitVerifyReady(metav1.ConditionFalse, snsv1alpha1.ReasonSecretKeyMissing)

	secret.StringData = map[string]string{"secretKey": "the-app-key"}
	g.Expect(env.Client.Update(t.Context(), secret)).To(Succeed())
	waitVerifyReady(metav1.ConditionTrue, snsv1alpha1.ReasonSecretKeyFound)

	// Without spec.verify, no VerifyReady.
	g.Eventually(func(g Gomega) {
		c := getConfig(g, ns, "app")
		c.Spec.Verify = nil
		g.Expect(env.Client.Update(t.Context(), c)).To(Succeed())
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		c := getConfig(g, ns, "app")
		g.Expect(c.Status.ObservedGeneration).To(Equal(c.Generation))
		g.Expect(c.Status.Conditions).NotTo(ContainElement(HaveField("Type", snsv1alpha1.ConditionVerifyReady)))
	}).Should(Succeed())
}
