package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/examples/audit"
	"github.com/imcallback/friend-deletion-operator/controllers/manager"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	testenv.Run(m, func(e *testenv.Env) { env = e })
}

func gt(t *testing.T) *WithT {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(20 * time.Second)
	g.SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	return g
}

// startOperator runs the operator with the example reconciler, as main.go
// does with --enable-example-reconciler, for one namespace.
func startOperator(t *testing.T, ns string) {
	testenv.Go(t, func(ctx context.Context) error {
		return manager.Run(ctx, manager.TestOptions(env.Config, ns), audit.SetupWithManager)
	})
}

// newFriendDeletion is a two-pair FriendDeletion of config "app".
func newFriendDeletion(ns string) *snsv1alpha1.FriendDeletion {
	return &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd1"},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: "app", SDKAppID: "1400000001", PairCount: 2,
			Pairs:    []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}, {From: "alice", To: "carol"}},
			ClientIP: "203.0.113.7", OptPlatform: "Android", ReceivedAt: metav1.Now(),
		},
	}
}

func auditStep() snsv1alpha1.CleanupStep {
	return snsv1alpha1.CleanupStep{Name: audit.StepName, External: &snsv1alpha1.ExternalStep{Deadline: &metav1.Duration{Duration: 5 * time.Minute}}}
}

// TestAuditStep runs a config whose second step is "audit".
func TestAuditStep(t *testing.T) {
	g := gt(t)
	ns := env.Namespace(t)
	startOperator(t, ns)
	ctx := t.Context()

	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{
			{Name: "purge", Job: &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			}}}}},
			auditStep(),
		}},
	}
	g.Expect(env.Client.Create(ctx, cfg)).To(Succeed())
	g.Expect(env.Client.Create(ctx, newFriendDeletion(ns))).To(Succeed())

	// The audit step waits for the job step before it.
	job := &batchv1.Job{}
	g.Eventually(func() error {
		return env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fd1-purge"}, job)
	}).Should(Succeed())
	g.Consistently(func() error {
		return env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fd1-audit"}, &corev1.ConfigMap{})
	}, time.Second).ShouldNot(Succeed())

	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}}
	g.Expect(env.Client.Status().Update(ctx, job)).To(Succeed())

	// Then the example writes its record and reports success.
	g.Eventually(func(g Gomega) {
		got := &snsv1alpha1.FriendDeletion{}
		g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fd1"}, got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
		g.Expect(got.Status.Steps[1].Message).To(Equal("Audit record in ConfigMap fd1-audit (2 pairs)."))
	}).Should(Succeed())
	cm := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fd1-audit"}, cm)).To(Succeed())
	g.Expect(cm.Data[audit.RecordKey]).To(ContainSubstring("alice\tbob\nalice\tcarol\n"))
	g.Expect(cm.Data[audit.RecordKey]).To(ContainSubstring("optPlatform=Android"))
	g.Expect(cm.OwnerReferences).To(ConsistOf(HaveField("Name", "fd1")))
}

// TestAuditStepFailsOnSomeoneElsesConfigMap: a ConfigMap of the record's
// name without the operator's label is invisible to the manager's cache;
// the example reads it from the API server and fails the step instead of
// retrying for ever.
func TestAuditStepFailsOnSomeoneElsesConfigMap(t *testing.T) {
	g := gt(t)
	ns := env.Namespace(t)
	ctx := t.Context()
	theirs := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd1-audit"},
		Data:       map[string]string{"owner": "another team"},
	}
	g.Expect(env.Client.Create(ctx, theirs)).To(Succeed())
	startOperator(t, ns)
	g.Expect(env.Client.Create(ctx, &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec:       snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{auditStep()}},
	})).To(Succeed())
	g.Expect(env.Client.Create(ctx, newFriendDeletion(ns))).To(Succeed())

	g.Eventually(func(g Gomega) {
		got := &snsv1alpha1.FriendDeletion{}
		g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fd1"}, got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(snsv1alpha1.PhaseFailed))
		g.Expect(got.Status.Steps[0].Message).To(Equal("ConfigMap fd1-audit exists and is not this FriendDeletion's audit record."))
	}).Should(Succeed())
	got := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fd1-audit"}, got)).To(Succeed())
	g.Expect(got.Data).To(Equal(map[string]string{"owner": "another team"}))
}
