package controllers

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	if os.Getenv("TEST_LOG") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	testenv.Run(m, func(e *testenv.Env) { env = e })
}

// gt is the test's Gomega, polling every 50ms for at most 20s.
func gt(t testing.TB) *WithT {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(20 * time.Second)
	g.SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	g.SetDefaultConsistentlyDuration(time.Second)
	g.SetDefaultConsistentlyPollingInterval(100 * time.Millisecond)
	return g
}

// testOptions are Options with backoffs short enough for tests.
func testOptions() Options {
	o := DefaultOptions()
	o.FriendDeletionConcurrency = 4
	o.RetryBaseDelay = 10 * time.Millisecond
	o.RetryMaxDelay = time.Second
	o.HTTPBackoffBase = 20 * time.Millisecond
	o.HTTPBackoffMax = 100 * time.Millisecond
	o.VerifyBackoffBase = 20 * time.Millisecond
	o.VerifyBackoffMax = 100 * time.Millisecond
	return o
}

// manager is a running manager for one test namespace.
type manager struct {
	ctrl.Manager
	cancel context.CancelFunc
	done   chan error
}

// Stop stops the manager and waits until it has stopped.
func (m *manager) Stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	<-m.done
	m.cancel = nil
}

// startManager runs the reconcilers (and extra setups) in a manager whose
// cache sees only ns, as main.go builds it, and stops it when the test ends.
func startManager(t *testing.T, ns string, opts Options, extra ...func(ctrl.Manager) error) *manager {
	t.Helper()
	return startManagerOn(t, env.Config, ns, opts, extra...)
}

// startManagerOn is startManager with the manager's own rest config.
func startManagerOn(t *testing.T, restConfig *rest.Config, ns string, opts Options, extra ...func(ctrl.Manager) error) *manager {
	t.Helper()
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: env.Scheme,
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{ns: {}},
			DefaultTransform:  cache.TransformStripManagedFields(),
			ByObject:          CacheByObject(),
		},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	if err := SetupWithManager(mgr, opts); err != nil {
		t.Fatalf("setting up reconcilers: %v", err)
	}
	for _, f := range extra {
		if err := f(mgr); err != nil {
			t.Fatalf("setting up: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &manager{Manager: mgr, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(ctx) }()
	t.Cleanup(m.Stop)
	return m
}

// newConfig is a CallbackConfig with the given cleanup steps.
func newConfig(ns, name string, steps ...snsv1alpha1.CleanupStep) *snsv1alpha1.CallbackConfig {
	return &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: "1400000001",
			Cleanup:  steps,
		},
	}
}

func jobStep(name string) snsv1alpha1.CleanupStep {
	return snsv1alpha1.CleanupStep{Name: name, Job: &batchv1.JobTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "im"}},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](2),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{
					Name: "cleanup", Image: "busybox:1.36",
					Command: []string{"sh", "-c", `echo "$FROM_ACCOUNT lost $TO_ACCOUNT"; cat "$PAIRS_FILE"`},
					Env:     []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "debug"}},
				}},
			}},
		},
	}}
}

func httpStep(name, url string, maxAttempts int32) snsv1alpha1.CleanupStep {
	return snsv1alpha1.CleanupStep{Name: name, HTTP: &snsv1alpha1.HTTPStep{URL: url, MaxAttempts: maxAttempts}}
}

func externalStep(name string, deadline time.Duration) snsv1alpha1.CleanupStep {
	s := snsv1alpha1.CleanupStep{Name: name, External: &snsv1alpha1.ExternalStep{}}
	if deadline > 0 {
		s.External.Deadline = &metav1.Duration{Duration: deadline}
	}
	return s
}

// newFriendDeletion is a FriendDeletion as the receiver stores it.
func newFriendDeletion(ns, name, config string, pairs ...snsv1alpha1.FriendPair) *snsv1alpha1.FriendDeletion {
	if len(pairs) == 0 {
		pairs = []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}
	}
	return &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			snsv1alpha1.LabelConfig: config, snsv1alpha1.LabelSDKAppID: "1400000001",
		}},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: config, SDKAppID: "1400000001", Pairs: pairs, PairCount: int32(len(pairs)),
			ClientIP: "203.0.113.7", OptPlatform: "RESTAPI", ReceivedAt: metav1.Now(),
		},
	}
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(t.Context(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// getFD reads a FriendDeletion from the API server.
func getFD(g Gomega, ns, name string) *snsv1alpha1.FriendDeletion {
	fd := &snsv1alpha1.FriendDeletion{}
	g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, fd)).To(Succeed())
	return fd
}

// stepOf returns the named step's status.
func stepOf(g Gomega, fd *snsv1alpha1.FriendDeletion, name string) snsv1alpha1.StepStatus {
	for _, st := range fd.Status.Steps {
		if st.Name == name {
			return st
		}
	}
	g.Expect(fd.Status.Steps).To(ContainElement(HaveField("Name", name)))
	return snsv1alpha1.StepStatus{}
}

// conditionOf returns the condition of that type, or an empty one.
func conditionOf(fd *snsv1alpha1.FriendDeletion, t string) metav1.Condition {
	for _, c := range fd.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return metav1.Condition{}
}

// waitForPhase waits until the FriendDeletion has that phase and returns it.
func waitForPhase(t *testing.T, ns, name string, phase snsv1alpha1.Phase) *snsv1alpha1.FriendDeletion {
	t.Helper()
	var fd *snsv1alpha1.FriendDeletion
	gt(t).Eventually(func(g Gomega) {
		fd = getFD(g, ns, name)
		g.Expect(fd.Status.Phase).To(Equal(phase))
	}).Should(Succeed())
	return fd
}

// getJob waits for the Job and returns it.
func getJob(t *testing.T, ns, name string) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{}
	gt(t).Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, job)).To(Succeed())
	}).Should(Succeed())
	return job
}

// setJobStatus plays the Job controller, which envtest does not run.
func setJobStatus(t *testing.T, job *batchv1.Job, outcome string) {
	t.Helper()
	now := metav1.Now()
	cond := func(tp batchv1.JobConditionType) batchv1.JobCondition {
		return batchv1.JobCondition{Type: tp, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "Test", Message: "set by the test"}
	}
	gt(t).Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(job), job)).To(Succeed())
		if job.Status.StartTime == nil { // immutable once set
			job.Status.StartTime = &now
		}
		switch outcome {
		case "podFailed":
			job.Status.Active, job.Status.Failed = 1, 1
		case "complete":
			job.Status.Active, job.Status.Succeeded = 0, 1
			job.Status.CompletionTime = &now
			job.Status.Conditions = append(job.Status.Conditions, cond(batchv1.JobSuccessCriteriaMet), cond(batchv1.JobComplete))
		case "failed":
			job.Status.Active, job.Status.Failed = 0, 3
			c := cond(batchv1.JobFailed)
			c.Reason, c.Message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
			job.Status.Conditions = append(job.Status.Conditions, cond(batchv1.JobFailureTarget), c)
		}
		g.Expect(env.Client.Status().Update(context.Background(), job)).To(Succeed())
	}).Should(Succeed())
}

// eventsFor lists the reasons of the Events about an object.
func eventsFor(g Gomega, ns, name string) []string {
	var list eventsv1.EventList
	g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var reasons []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

func nsName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
