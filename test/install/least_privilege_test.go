package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

// TestManagerRunsWithInstalledPermissions installs the kubectl bundle, then
// runs the manager as its ServiceAccount (impersonated, with the generated
// ClusterRole and the leader-election Role and nothing more) and sends a
// callback through: it must be stored, its Job created, and the
// FriendDeletion must reach Succeeded once the Job completes. Then a callback
// of many pairs, whose Job reads its pairs from a ConfigMap.
func TestManagerRunsWithInstalledPermissions(t *testing.T) {
	g := NewWithT(t)
	apply(t, filepath.Join(root, bundleFile))

	asManager := rest.CopyConfig(env.Config)
	asManager.Impersonate = rest.ImpersonationConfig{
		UserName: fmt.Sprintf("system:serviceaccount:%s:%s", bundleNS, bundleSA),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + bundleNS, "system:authenticated"},
	}
	receiverAddr := freeLoopbackAddr(t)
	receiverOpts := webhook.DefaultOptions()
	receiverOpts.BindAddress = receiverAddr
	receiverOpts.StatusFlushInterval = 200 * time.Millisecond

	mgr, err := ctrl.NewManager(asManager, ctrl.Options{
		Scheme:                  env.Scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionNamespace: bundleNS,
		LeaderElectionID:        "least-privilege-test",
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         controllers.CacheByObject(),
		},
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(webhook.SetupWithManager(mgr, receiverOpts)).To(Succeed())
	g.Expect(controllers.SetupWithManager(mgr, controllers.DefaultOptions())).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with an error: %v", err)
		}
	})

	ns := env.Namespace(t)
	const token = "least-privilege-token"
	g.Expect(env.Client.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "im-token"},
		StringData: map[string]string{"token": token},
	})).To(Succeed())
	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-app"},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: "1400000001",
			Auth:     &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}},
			Cleanup: []snsv1alpha1.CleanupStep{{
				Name: "purge-history",
				Job: &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "purge", Image: "registry.example.com/purge:1"}},
				}}}},
			}},
		},
	}
	g.Expect(env.Client.Create(t.Context(), cfg)).To(Succeed())

	// The CallbackConfig reconciler, reading the Secret as the manager,
	// reports the config Ready.
	g.Eventually(func(g Gomega) {
		got := &snsv1alpha1.CallbackConfig{}
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), got)).To(Succeed())
		g.Expect(got.Status.WebhookPath).To(Equal("/callbacks/" + ns + "/chat-app"))
		g.Expect(got.Status.Conditions).To(ContainElement(And(
			HaveField("Type", snsv1alpha1.ConditionReady), HaveField("Status", metav1.ConditionTrue))))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	// A signed callback is stored: the receiver read the token Secret and
	// created the FriendDeletion with the manager's permissions.
	now := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(token + now))
	q := url.Values{
		"SdkAppid": {"1400000001"}, "CallbackCommand": {"Sns.CallbackFriendDelete"}, "contenttype": {"json"},
		"ClientIP": {"127.0.0.1"}, "OptPlatform": {"RESTAPI"}, "RequestTime": {now}, "Sign": {hex.EncodeToString(sum[:])},
	}
	body := `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"id","To_Account":"id1"}]}`
	callbackURL := "http://" + receiverAddr + "/callbacks/" + ns + "/chat-app?" + q.Encode()
	g.Eventually(func(g Gomega) {
		resp, err := http.Post(callbackURL, "application/json", strings.NewReader(body))
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK), string(answer))
		g.Expect(answer).To(MatchJSON(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`))
	}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())

	var fd snsv1alpha1.FriendDeletion
	var job batchv1.Job
	g.Eventually(func(g Gomega) {
		var list snsv1alpha1.FriendDeletionList
		g.Expect(env.Client.List(t.Context(), &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(1))
		fd = list.Items[0]
		g.Expect(fd.Status.Steps).To(HaveLen(1))
		g.Expect(fd.Status.Steps[0].JobName).NotTo(BeEmpty())
		g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: fd.Status.Steps[0].JobName}, &job)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(job.Labels).To(HaveKeyWithValue(snsv1alpha1.LabelFriendDeletion, fd.Name))

	// Play the Job controller; the manager sees the Job complete.
	completeJob(t, &job)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(&fd), &fd)).To(Succeed())
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	// A deletion of many pairs (over controllers.InlinePairsLimit as JSON)
	// gets its pairs file from a ConfigMap, also owned by the FriendDeletion.
	var pairs []string
	for i := range 200 {
		pairs = append(pairs, fmt.Sprintf(`{"From_Account":"id","To_Account":"friend-%03d"}`, i))
	}
	body = `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[` + strings.Join(pairs, ",") + `]}`
	g.Eventually(func(g Gomega) {
		resp, err := http.Post(callbackURL, "application/json", strings.NewReader(body))
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		var cms corev1.ConfigMapList
		g.Expect(env.Client.List(t.Context(), &cms, client.InNamespace(ns), client.HasLabels{snsv1alpha1.LabelFriendDeletion})).To(Succeed())
		g.Expect(cms.Items).To(HaveLen(1))
		g.Expect(cms.Items[0].OwnerReferences).To(ConsistOf(HaveField("Kind", "FriendDeletion")))
		var jobs batchv1.JobList
		g.Expect(env.Client.List(t.Context(), &jobs, client.InNamespace(ns))).To(Succeed())
		g.Expect(jobs.Items).To(HaveLen(2))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	// The receiver's batched counters reach the config's status too.
	g.Eventually(func(g Gomega) {
		got := &snsv1alpha1.CallbackConfig{}
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), got)).To(Succeed())
		g.Expect(got.Status.AcceptedCallbacks).To(BeNumerically(">=", 2))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// completeJob sets the status the Job controller would, which envtest does
// not run.
func completeJob(t *testing.T, job *batchv1.Job) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(job), job)).To(Succeed())
		now := metav1.Now()
		job.Status.StartTime, job.Status.CompletionTime = &now, &now
		job.Status.Succeeded = 1
		for _, tp := range []batchv1.JobConditionType{batchv1.JobSuccessCriteriaMet, batchv1.JobComplete} {
			job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{
				Type: tp, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "Test"})
		}
		g.Expect(env.Client.Status().Update(t.Context(), job)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// freeLoopbackAddr returns a loopback address with a port nothing listens on.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
