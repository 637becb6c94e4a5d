package manager_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
	"github.com/imcallback/friend-deletion-operator/controllers/manager"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	testenv.Run(m, func(e *testenv.Env) { env = e })
}

// TestRunWithASetup runs the operator through its public entry point with
// a reconciler of its own, as a team's main.go would, and follows a
// FriendDeletion through that reconciler's step, which reads its params.
func TestRunWithASetup(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	greet := func(mgr ctrl.Manager) error {
		return cleanup.NewControllerManagedBy(mgr, "greet").Complete(cleanup.StepReconcilerFunc(
			func(ctx context.Context, step *cleanup.Step) (ctrl.Result, error) {
				return ctrl.Result{}, step.Succeed(ctx, step.Params["greeting"]+", "+step.FriendDeletion.Spec.Pairs[0].From+".")
			}))
	}
	testenv.Go(t, func(ctx context.Context) error {
		return manager.Run(ctx, manager.TestOptions(env.Config, ns), greet)
	})

	g.Expect(env.Client.Create(t.Context(), &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{{
			Name: "greet", External: &snsv1alpha1.ExternalStep{Params: map[string]string{"greeting": "Goodbye"}},
		}}},
	})).To(Succeed())
	g.Expect(env.Client.Create(t.Context(), &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd1"},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: "app", SDKAppID: "1400000001", PairCount: 1,
			Pairs: []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}, ReceivedAt: metav1.Now(),
		},
	})).To(Succeed())

	g.Eventually(func(g Gomega) {
		fd := &snsv1alpha1.FriendDeletion{}
		g.Expect(env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "fd1"}, fd)).To(Succeed())
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
		g.Expect(fd.Status.Steps[0].Message).To(Equal("Goodbye, alice."))
	}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
}

// TestRunRefusesBadOptions: a setup's error, and bad receiver options, stop
// Run before anything starts.
func TestRunRefusesBadOptions(t *testing.T) {
	g := NewWithT(t)
	opts := manager.TestOptions(env.Config)
	failing := func(ctrl.Manager) error { return context.DeadlineExceeded }
	g.Expect(manager.Run(t.Context(), opts, failing)).To(MatchError(ContainSubstring("setup 1: context deadline exceeded")))

	opts.Receiver.BindAddress = ""
	g.Expect(manager.Run(t.Context(), opts)).To(MatchError(ContainSubstring("--receiver-bind-address must not be empty")))
}
