package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/internal/imrest/imresttest"
)

// TestRolesRunWithInstalledPermissions installs the kubectl bundle and runs
// the real manager binary twice, as the bundle's Deployments do: once with
// --role=receiver as the receiver's ServiceAccount and once with
// --role=controllers (leader-elected) as the controllers' ServiceAccount,
// each impersonated with its installed bindings and nothing more. A signed
// callback goes through to Succeeded (the receiver reading the token Secret
// through the controllers' grant, and no other Secret), a callback of many
// pairs gets its ConfigMap, a batched job step runs, an http step sends a
// Secret's headers trusting a ConfigMap's CA and retention deletes the
// Succeeded deletion, the receiver's counters reach the config's status, and
// neither process is refused anything by the API server along the way. Then the
// metrics of both are scraped: refused without a token or with one not
// bound to metrics-reader, served with one that is.
func TestRolesRunWithInstalledPermissions(t *testing.T) {
	g := NewWithT(t)
	apply(t, filepath.Join(root, bundleFile))
	bin := managerBinary(t)
	// Both ways, from the API server's audit log, once both processes
	// stopped (their last requests included): neither identity was refused
	// a request, and, when the scenario ran through, each used every access
	// its installed roles grant (but for the few notRequested explains).
	// Refusals are reported even when the scenario stopped short, since a
	// missing permission is the likeliest reason it did.
	since, ranThrough := time.Now(), false
	t.Cleanup(func() {
		expectBothWays(t, "controllers", auditedRequests(t, serviceAccountUser(bundleNS, bundleSA), since), ranThrough,
			grantedBy(generatedRulesOf(t, generatedRole), leaderElectionRules, generatedRulesOf(t, generatedMetricsAuthRole)))
		expectBothWays(t, "receiver", auditedRequests(t, serviceAccountUser(bundleNS, bundleReceiverSA), since), ranThrough,
			grantedBy(generatedRulesOf(t, generatedReceiverRole), generatedRulesOf(t, generatedMetricsAuthRole)))
	})

	receiverAddr, receiverMetrics, controllersMetrics := freeLoopbackAddr(t), freeLoopbackAddr(t), freeLoopbackAddr(t)
	// A Lease of its own per run, which the controllers create (a repeated
	// run would find the last one's).
	leaseName := "least-privilege-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	receiver := startManagerWithEnv(t, bin, "receiver", kubeconfigAs(t, bundleNS, bundleReceiverSA), listThenWatch,
		"--role=receiver",
		"--receiver-bind-address="+receiverAddr,
		"--receiver-status-flush-interval=200ms",
		"--metrics-bind-address="+receiverMetrics,
		"--health-probe-bind-address=0",
	)
	controllers := startManagerWithEnv(t, bin, "controllers", kubeconfigAs(t, bundleNS, bundleSA), listThenWatch,
		"--role=controllers",
		"--leader-elect",
		"--receiver-service-account="+bundleNS+"/"+bundleReceiverSA,
		"--leader-election-namespace="+bundleNS,
		"--leader-election-id="+leaseName,
		"--metrics-bind-address="+controllersMetrics,
		"--health-probe-bind-address=0",
	)

	ns := env.Namespace(t)
	callbackURL, cfg := callbackToSucceeded(t, receiverAddr, ns, bundleNS, bundleReceiverSA)
	receiverReadsOnlyTokenSecrets(t, ns, bundleNS, bundleReceiverSA)

	// A deletion of many pairs (over controllers.InlinePairsLimit as JSON)
	// gets its pairs file from a ConfigMap, also owned by the FriendDeletion.
	var pairs []string
	for i := range 200 {
		pairs = append(pairs, fmt.Sprintf(`{"From_Account":"id","To_Account":"friend-%03d"}`, i))
	}
	body := `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[` + strings.Join(pairs, ",") + `]}`
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
		// The many-pair deletion's Job exists; the first deletion's finished
		// Job was deleted once its outcome was recorded, which the
		// controllers' role allows.
		var jobs batchv1.JobList
		g.Expect(env.Client.List(t.Context(), &jobs, client.InNamespace(ns))).To(Succeed())
		g.Expect(jobs.Items).To(ConsistOf(HaveField("ObjectMeta.Labels", HaveKeyWithValue(snsv1alpha1.LabelFriendDeletion, cms.Items[0].OwnerReferences[0].Name))))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	batchedJobRunsWithInstalledPermissions(t, env.Namespace(t))
	httpStepAndRetentionRunWithInstalledPermissions(t, env.Namespace(t))
	verifiedDeletionRunsWithInstalledPermissions(t, env.Namespace(t))
	receiverAccessFollowsConfig(t, env.Namespace(t), bundleNS, bundleReceiverSA)
	jobDeletedByHandAndMissingConfigFail(t, env.Namespace(t))

	// The receiver's batched counters reach the config's status too.
	g.Eventually(func(g Gomega) {
		got := &snsv1alpha1.CallbackConfig{}
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), got)).To(Succeed())
		g.Expect(got.Status.AcceptedCallbacks).To(BeNumerically(">=", 2))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	// The controllers hold the leader-election Lease; the receiver elects
	// no leader (and may not read Leases).
	lease := &coordinationv1.Lease{}
	g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: bundleNS, Name: leaseName}, lease)).To(Succeed())
	g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())

	// Authenticated metrics, on both roles: no token is 401, a token whose
	// ServiceAccount is not bound to metrics-reader is 403, a bound one is
	// served.
	scraper, stranger := env.Namespace(t), env.Namespace(t)
	allowedToken := serviceAccountToken(t, scraper, "prometheus")
	strangerToken := serviceAccountToken(t, stranger, "prometheus")
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "metrics-reader-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "friend-deletion-operator-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: scraper, Name: "prometheus"}},
	}
	g.Expect(env.Client.Create(t.Context(), crb)).To(Succeed())
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), crb) })
	waitForMetricsReader(t, scraper, "prometheus")
	for name, addr := range map[string]string{"controllers": controllersMetrics, "receiver": receiverMetrics} {
		t.Run("metrics of the "+name, func(t *testing.T) {
			g := NewWithT(t)
			g.Eventually(func(g Gomega) {
				code, _ := scrape(g, addr, "")
				g.Expect(code).To(Equal(http.StatusUnauthorized))
			}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
			code, _ := scrape(g, addr, strangerToken)
			g.Expect(code).To(Equal(http.StatusForbidden))
			code, metrics := scrape(g, addr, allowedToken)
			g.Expect(code).To(Equal(http.StatusOK))
			want := "controller_runtime_reconcile_total"
			if name == "receiver" {
				want = "callbacks_total"
			}
			g.Expect(metrics).To(ContainSubstring(want))
		})
	}

	// Every permission the two processes used was granted: no request of
	// theirs was refused, in the foreground or by an informer retrying.
	for _, p := range []*managerProcess{receiver, controllers} {
		g.Expect(p.log()).NotTo(ContainSubstring("forbidden"), "the %s process was refused a request", p.name)
	}
	ranThrough = true
}

// listThenWatch makes client-go's informers list and then watch, as they
// do against an API server that does not stream the initial list
// (WatchList, which this one serves): the installed roles must serve both.
// With it the audit log shows the list a streaming start would hide; the
// streaming start itself needs only watch, which the processes use anyway.
var listThenWatch = []string{"KUBE_FEATURE_WatchListClient=false"}

// jobDeletedByHandAndMissingConfigFail fails two FriendDeletions on paths
// where the controllers read from the API server what their cache does
// not hold: a recorded Job deleted by hand (the step fails, the Job is not
// created again) and a FriendDeletion naming no CallbackConfig (it fails
// with ConfigNotFound).
func jobDeletedByHandAndMissingConfigFail(t *testing.T, ns string) {
	t.Helper()
	g := NewWithT(t)
	cfg := createChatApp(t, ns, "job-gone-token")
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd-job-gone"},
		Spec: snsv1alpha1.FriendDeletionSpec{ConfigName: cfg.Name, SDKAppID: cfg.Spec.SDKAppID, PairCount: 1, ReceivedAt: metav1.Now(),
			Pairs: []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}},
	}
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())
	orphan := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd-no-config"},
		Spec: snsv1alpha1.FriendDeletionSpec{ConfigName: "no-such-config", SDKAppID: cfg.Spec.SDKAppID, PairCount: 1, ReceivedAt: metav1.Now(),
			Pairs: []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}},
	}
	g.Expect(env.Client.Create(t.Context(), orphan)).To(Succeed())

	job := &batchv1.Job{}
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(fd), fd)).To(Succeed())
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "fd-job-gone-purge-history"}, job)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(env.Client.Delete(t.Context(), job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(fd), fd)).To(Succeed())
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseFailed))
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(orphan), orphan)).To(Succeed())
		g.Expect(orphan.Status.Phase).To(Equal(snsv1alpha1.PhaseFailed))
		g.Expect(meta.FindStatusCondition(orphan.Status.Conditions, snsv1alpha1.ConditionReady)).To(HaveField("Reason", snsv1alpha1.ReasonConfigNotFound))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(apierrors.IsNotFound(env.Client.Get(t.Context(), client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(BeTrue(), "the deleted Job was created again")
}

// verifiedDeletionRunsWithInstalledPermissions runs a FriendDeletion of a
// config with spec.verify against a fake IM REST API: the controllers read
// the secret key's Secret, the pair still friends is skipped, the gone one
// goes to the job step, and the deletion succeeds.
func verifiedDeletionRunsWithInstalledPermissions(t *testing.T, ns string) {
	t.Helper()
	g := NewWithT(t)
	const sdkAppID, key = "1400000013", "least-privilege-app-key"
	im := imresttest.NewServer(sdkAppID, "administrator", []byte(key))
	t.Cleanup(func() {
		im.Close()
		if p := im.Problems(); len(p) > 0 {
			t.Errorf("malformed IM REST requests: %q", p)
		}
	})
	im.MakeFriends("alice", "bob")
	g.Expect(env.Client.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "im-key"},
		StringData: map[string]string{"secretKey": key},
	})).To(Succeed())
	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "verified"},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: sdkAppID,
			Verify: &snsv1alpha1.Verify{
				Endpoint:     im.URL,
				Identifier:   "administrator",
				SecretKeyRef: snsv1alpha1.SecretKeyRef{Name: "im-key", Key: "secretKey"},
			},
			Cleanup: []snsv1alpha1.CleanupStep{{
				Name: "purge",
				Job:  purgeJob(),
			}},
		},
	}
	g.Expect(env.Client.Create(t.Context(), cfg)).To(Succeed())
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd-verified"},
		Spec: snsv1alpha1.FriendDeletionSpec{ConfigName: "verified", SDKAppID: sdkAppID, PairCount: 2, ReceivedAt: metav1.Now(),
			Pairs: []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}, {From: "alice", To: "carol"}}},
	}
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())
	job := &batchv1.Job{}
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(fd), fd)).To(Succeed())
		g.Expect(fd.Status.Verification).NotTo(BeNil())
		g.Expect(fd.Status.Verification.Verified).To(Equal("1/2"))
		g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "fd-verified-purge"}, job)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	completeJob(t, job)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(fd), fd)).To(Succeed())
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(im.Calls()).NotTo(BeEmpty())
}

// receiverAccessFollowsConfig changes what a config's receiver grant must
// be, as people do: the token Secret is renamed to one created afterwards
// (the Role is patched), the
// RoleBinding's subjects are edited by hand (patched back), and
// authentication is removed (both are deleted).
func receiverAccessFollowsConfig(t *testing.T, ns, recvNS, recvSA string) {
	t.Helper()
	g := NewWithT(t)
	cfg := createChatApp(t, ns, "first-token")
	roleKey := client.ObjectKey{Namespace: ns, Name: "chat-app-receiver-token"}
	secretOfRole := func(g Gomega) string {
		role := &rbacv1.Role{}
		g.Expect(env.Client.Get(t.Context(), roleKey, role)).To(Succeed())
		g.Expect(role.Rules).To(HaveLen(1))
		g.Expect(role.Rules[0].ResourceNames).To(HaveLen(1))
		return role.Rules[0].ResourceNames[0]
	}
	g.Eventually(secretOfRole).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal("im-token"))

	readyReason := func(g Gomega) string {
		got := &snsv1alpha1.CallbackConfig{}
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), got)).To(Succeed())
		c := meta.FindStatusCondition(got.Status.Conditions, snsv1alpha1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		return c.Reason
	}
	g.Eventually(readyReason).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(snsv1alpha1.ReasonConfigured))

	// The config names a Secret not created yet (the Role follows at once,
	// the config is not Ready), then it is created (Ready again).
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
		cfg.Spec.Auth.TokenSecretRef.Name = "im-token-2"
		g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Eventually(secretOfRole).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal("im-token-2"))
	g.Eventually(readyReason).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(snsv1alpha1.ReasonSecretNotFound))
	g.Expect(env.Client.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "im-token-2"},
		StringData: map[string]string{"token": "second-token"},
	})).To(Succeed())
	g.Eventually(readyReason).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(snsv1alpha1.ReasonConfigured))

	receiverIsSubject := func(g Gomega) []rbacv1.Subject {
		rb := &rbacv1.RoleBinding{}
		g.Expect(env.Client.Get(t.Context(), roleKey, rb)).To(Succeed())
		return rb.Subjects
	}
	want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: recvNS, Name: recvSA}}
	g.Eventually(receiverIsSubject).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(want))
	g.Eventually(func(g Gomega) {
		rb := &rbacv1.RoleBinding{}
		g.Expect(env.Client.Get(t.Context(), roleKey, rb)).To(Succeed())
		rb.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "someone-else"}}
		g.Expect(env.Client.Update(t.Context(), rb)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Eventually(receiverIsSubject).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(want))

	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
		cfg.Spec.Auth = nil
		g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(apierrors.IsNotFound(env.Client.Get(t.Context(), roleKey, &rbacv1.Role{}))).To(BeTrue(), "the Role is left")
		g.Expect(apierrors.IsNotFound(env.Client.Get(t.Context(), roleKey, &rbacv1.RoleBinding{}))).To(BeTrue(), "the RoleBinding is left")
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// TestRolesRunWatchingNamespaces installs the Helm chart with
// watchNamespaces, so both identities hold Roles in one namespace and no
// ClusterRole but the metrics-auth one, and runs the binary in both roles
// with --watch-namespaces as their ServiceAccounts: a callback in the
// watched namespace goes through to Succeeded with nothing refused.
func TestRolesRunWatchingNamespaces(t *testing.T) {
	g := NewWithT(t)
	release, watched := env.Namespace(t), env.Namespace(t)
	apply(t, writeTemp(t, "chart.yaml", mustHelmTemplate(t, release, "--set", "watchNamespaces={"+watched+"}")))
	bin := managerBinary(t)

	receiverAddr := freeLoopbackAddr(t)
	receiver := startManager(t, bin, "receiver", kubeconfigAs(t, release, chartReceiver),
		"--role=receiver",
		"--watch-namespaces="+watched,
		"--receiver-bind-address="+receiverAddr,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
	)
	controllers := startManager(t, bin, "controllers", kubeconfigAs(t, release, chartControllers),
		"--role=controllers",
		"--watch-namespaces="+watched,
		"--receiver-service-account="+release+"/"+chartReceiver,
		"--leader-elect",
		"--leader-election-namespace="+release,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
	)
	callbackToSucceeded(t, receiverAddr, watched, release, chartReceiver)
	for _, p := range []*managerProcess{receiver, controllers} {
		g.Expect(p.log()).NotTo(ContainSubstring("forbidden"), "the %s process was refused a request", p.name)
	}
}

// serviceAccountUser is the user name a ServiceAccount's requests carry.
func serviceAccountUser(ns, sa string) string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa)
}

// callbackToSucceeded creates a token Secret and a CallbackConfig with one
// job step in ns, waits for the config to be Ready and for the controllers
// to grant the receiver's ServiceAccount (recvNS/recvSA) the token Secret,
// sends a signed callback to the receiver at receiverAddr, plays the Job
// controller, and waits for the FriendDeletion to reach Succeeded. It
// returns the callback URL and the config.
func callbackToSucceeded(t *testing.T, receiverAddr, ns, recvNS, recvSA string) (string, *snsv1alpha1.CallbackConfig) {
	t.Helper()
	g := NewWithT(t)
	const secret = "least-privilege-token"
	cfg := createChatApp(t, ns, secret)

	// The CallbackConfig reconciler, reading the Secret as the controllers,
	// reports the config Ready.
	g.Eventually(func(g Gomega) {
		got := &snsv1alpha1.CallbackConfig{}
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), got)).To(Succeed())
		g.Expect(got.Status.WebhookPath).To(Equal("/callbacks/" + ns + "/chat-app"))
		g.Expect(got.Status.Conditions).To(ContainElement(And(
			HaveField("Type", snsv1alpha1.ConditionReady), HaveField("Status", metav1.ConditionTrue))))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	// The controllers grant the receiver the token Secret, and nothing
	// grants it before: the receiver's own role holds no Secret. Waiting
	// for the authorizer to see the grant keeps the receiver's first read
	// from being refused (which it would answer 503 and retry).
	token := authorizationv1.ResourceAttributes{Namespace: ns, Resource: "secrets", Name: "im-token", Verb: "get"}
	waitForBindings(t, recvNS, recvSA, []authorizationv1.ResourceAttributes{token})

	// A signed callback is stored: the receiver read the token Secret by
	// name and created the FriendDeletion with its own permissions.
	now := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(secret + now))
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

	// Play the Job controller; the controllers see the Job complete.
	completeJob(t, &job)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(&fd), &fd)).To(Succeed())
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	return callbackURL, cfg
}

// receiverReadsOnlyTokenSecrets asks the API server's authorizer, once the
// controllers have granted the receiver's ServiceAccount (recvNS/recvSA)
// the token Secret of a config in ns, what else of the config's Secrets it
// may read: nothing. Not the IM app's secret key spec.verify names, not the
// credentials an http step's headersSecretRef names, not a Helm release's
// Secret or any other by name, not the token's name in another namespace,
// and no list or watch.
func receiverReadsOnlyTokenSecrets(t *testing.T, ns, recvNS, recvSA string) {
	t.Helper()
	g := NewWithT(t)
	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "guarded"},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: "1400000002",
			Auth:     &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "guarded-token", Key: "token"}},
			Verify: &snsv1alpha1.Verify{Endpoint: "https://im.example.com", Identifier: "administrator",
				SecretKeyRef: snsv1alpha1.SecretKeyRef{Name: "im-admin-key", Key: "secretKey"}},
			Cleanup: []snsv1alpha1.CleanupStep{{
				Name: "notify-crm",
				HTTP: &snsv1alpha1.HTTPStep{URL: "https://crm.example.com/friend-deleted", HeadersSecretRef: &snsv1alpha1.SecretRef{Name: "crm-headers"}},
			}},
		},
	}
	g.Expect(env.Client.Create(t.Context(), cfg)).To(Succeed())
	waitForBindings(t, recvNS, recvSA, []authorizationv1.ResourceAttributes{{Namespace: ns, Resource: "secrets", Name: "guarded-token", Verb: "get"}})
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Namespace: ns, Resource: "secrets", Name: "im-admin-key", Verb: "get"},
		{Namespace: ns, Resource: "secrets", Name: "crm-headers", Verb: "get"},
		{Namespace: ns, Resource: "secrets", Name: "sh.helm.release.v1.fdo.v1", Verb: "get"},
		{Namespace: ns, Resource: "secrets", Verb: "get"},
		{Namespace: ns, Resource: "secrets", Verb: "list"},
		{Namespace: ns, Resource: "secrets", Name: "guarded-token", Verb: "watch"},
		{Namespace: ns, Resource: "secrets", Name: "guarded-token", Verb: "update"},
		{Namespace: recvNS, Resource: "secrets", Name: "guarded-token", Verb: "get"},
		{Namespace: "kube-system", Resource: "secrets", Name: "im-token", Verb: "get"},
	} {
		if allowed(t, recvNS, recvSA, attrs) {
			t.Errorf("the receiver may %s Secret %q in %q; it should read only the token Secrets configs name", attrs.Verb, attrs.Name, attrs.Namespace)
		}
	}
	for _, name := range []string{"im-token", "guarded-token"} {
		if !allowed(t, recvNS, recvSA, authorizationv1.ResourceAttributes{Namespace: ns, Resource: "secrets", Name: name, Verb: "get"}) {
			t.Errorf("the receiver may not get the token Secret %s/%s", ns, name)
		}
	}
}

// batchedJobRunsWithInstalledPermissions runs two FriendDeletions of many
// pairs through a batched job step: the controllers create one Job for
// both, owned by both, with its pairs in a ConfigMap, and delete the Job
// and the ConfigMap once both recorded the outcome.
func batchedJobRunsWithInstalledPermissions(t *testing.T, ns string) {
	t.Helper()
	g := NewWithT(t)
	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "batched"},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: "1400000001",
			Cleanup: []snsv1alpha1.CleanupStep{{
				Name:  "purge",
				Job:   purgeJob(),
				Batch: &snsv1alpha1.JobBatch{MaxDeletions: 2},
			}},
		},
	}
	g.Expect(env.Client.Create(t.Context(), cfg)).To(Succeed())
	for _, name := range []string{"fd-a", "fd-b"} {
		fd := &snsv1alpha1.FriendDeletion{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       snsv1alpha1.FriendDeletionSpec{ConfigName: "batched", SDKAppID: "1400000001", PairCount: 100, ReceivedAt: metav1.Now()},
		}
		for i := range 100 {
			fd.Spec.Pairs = append(fd.Spec.Pairs, snsv1alpha1.FriendPair{From: name, To: fmt.Sprintf("friend-%03d", i)})
		}
		g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())
	}
	job := &batchv1.Job{}
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "fd-a-purge"}, job)).To(Succeed())
		g.Expect(job.OwnerReferences).To(HaveLen(2))
		var cms corev1.ConfigMapList
		g.Expect(env.Client.List(t.Context(), &cms, client.InNamespace(ns))).To(Succeed())
		g.Expect(cms.Items).To(ContainElement(HaveField("ObjectMeta.Name", "fd-a-purge-pairs")))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	completeJob(t, job)
	g.Eventually(func(g Gomega) {
		var list snsv1alpha1.FriendDeletionList
		g.Expect(env.Client.List(t.Context(), &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(2))
		for _, fd := range list.Items {
			g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
		}
		var jobs batchv1.JobList
		g.Expect(env.Client.List(t.Context(), &jobs, client.InNamespace(ns))).To(Succeed())
		g.Expect(jobs.Items).To(BeEmpty())
		var cms corev1.ConfigMapList
		g.Expect(env.Client.List(t.Context(), &cms, client.InNamespace(ns), client.HasLabels{snsv1alpha1.LabelFriendDeletion})).To(Succeed())
		g.Expect(cms.Items).To(BeEmpty())
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// httpStepAndRetentionRunWithInstalledPermissions runs a FriendDeletion
// through an http step over HTTPS that sends the headers of a Secret
// (headersSecretRef) and trusts the CA of a ConfigMap (caBundleRef), under
// a retention that keeps no Succeeded FriendDeletion: the request arrives
// with the Secret's header, and the FriendDeletion, Succeeded, is deleted.
// Failed ones are kept a week, so its deletion says it succeeded. This
// needs the controllers' rights to get Secrets and ConfigMaps and to delete
// FriendDeletions.
func httpStepAndRetentionRunWithInstalledPermissions(t *testing.T, ns string) {
	t.Helper()
	g := NewWithT(t)
	var mu sync.Mutex
	var apiKeys []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		apiKeys = append(apiKeys, r.Header.Get("X-Api-Key"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	g.Expect(env.Client.Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm-headers"},
		StringData: map[string]string{"X-Api-Key": "crm-key"},
	})).To(Succeed())
	g.Expect(env.Client.Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm-ca"},
		Data:       map[string]string{"ca.crt": string(ca)},
	})).To(Succeed())
	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "notify"},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: "1400000001",
			Cleanup: []snsv1alpha1.CleanupStep{{
				Name: "notify-crm",
				HTTP: &snsv1alpha1.HTTPStep{
					URL:              srv.URL + "/friend-deleted",
					HeadersSecretRef: &snsv1alpha1.SecretRef{Name: "crm-headers"},
					CABundleRef:      &snsv1alpha1.ConfigMapKeyRef{Name: "crm-ca"},
					MaxAttempts:      1,
				},
			}},
			Retention: snsv1alpha1.Retention{Succeeded: &metav1.Duration{}},
		},
	}
	g.Expect(env.Client.Create(t.Context(), cfg)).To(Succeed())
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd-notify"},
		Spec: snsv1alpha1.FriendDeletionSpec{ConfigName: "notify", SDKAppID: "1400000001", PairCount: 1, ReceivedAt: metav1.Now(),
			Pairs: []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}},
	}
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())
	g.Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(apiKeys).To(Equal([]string{"crm-key"}))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(fd), fd)
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "FriendDeletion %s is %s, not deleted by retention (%v)", fd.Name, fd.Status.Phase, err)
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// scrape GETs /metrics over HTTPS (the pods' certificate is self-signed)
// with a bearer token, when given; it returns the status and body.
func scrape(g Gomega, addr, token string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	g.Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a self-signed test certificate
	resp, err := c.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, string(b)
}

// serviceAccountToken creates a ServiceAccount and returns a token for it.
func serviceAccountToken(t *testing.T, ns, name string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Create(t.Context(), sa); err != nil {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenRequest{}
	if err := env.Client.SubResource("token").Create(t.Context(), sa, tr); err != nil {
		t.Fatalf("requesting a token for %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}

// waitForMetricsReader waits until the authorizer lets the ServiceAccount
// get /metrics, so that the manager's authorizer, which remembers a denial
// for 30 seconds, is not asked before the binding is seen.
func waitForMetricsReader(t *testing.T, ns, sa string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:                  fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa),
			Groups:                []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
		}}
		g.Expect(env.Client.Create(t.Context(), sar)).To(Succeed())
		g.Expect(sar.Status.Allowed).To(BeTrue())
	}).WithTimeout(30 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
}

// managerBinary is the manager built from this checkout into the test's
// temporary folder, or $MANAGER when set (make test-e2e builds bin/manager).
func managerBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("MANAGER"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "manager")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// kubeconfigAs writes a kubeconfig that reaches the test's API server as the
// administrator impersonating a ServiceAccount, so that requests are
// authorized as that ServiceAccount's.
func kubeconfigAs(t *testing.T, ns, sa string) string {
	t.Helper()
	server := env.Config.Host
	if !strings.Contains(server, "://") {
		server = "https://" + server
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{
		ClientCertificateData: env.Config.CertData,
		ClientKeyData:         env.Config.KeyData,
		Token:                 env.Config.BearerToken,
		Impersonate:           fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa),
		ImpersonateGroups:     []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	kc.Contexts[sa] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: sa}
	kc.CurrentContext = sa
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// managerProcess is a running manager binary.
type managerProcess struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
}

func (p *managerProcess) log() string { return p.out.String() }

// startManager runs the manager binary with a kubeconfig and flags until
// the test ends, then stops it as Kubernetes would (SIGTERM) and prints its
// log if the test failed.
func startManager(t *testing.T, bin, name, kubeconfig string, args ...string) *managerProcess {
	t.Helper()
	return startManagerWithEnv(t, bin, name, kubeconfig, nil, args...)
}

// startManagerWithEnv is startManager with variables added to the
// process's environment.
func startManagerWithEnv(t *testing.T, bin, name, kubeconfig string, environ []string, args ...string) *managerProcess {
	t.Helper()
	p := &managerProcess{name: name, out: &syncBuffer{}}
	p.cmd = exec.Command(bin, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	if environ != nil {
		p.cmd.Env = append(os.Environ(), environ...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("the %s stopped with %v", name, err)
			}
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Errorf("the %s did not stop within 30s of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.log())
		}
	})
	return p
}

// syncBuffer is a bytes.Buffer that a process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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

// createChatApp creates in ns the token Secret "im-token" holding token and
// the CallbackConfig "chat-app" of the test app, signed with it, with one
// job step "purge-history".
func createChatApp(t *testing.T, ns, token string) *snsv1alpha1.CallbackConfig {
	t.Helper()
	g := NewWithT(t)
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
				Job:  purgeJob(),
			}},
		},
	}
	g.Expect(env.Client.Create(t.Context(), cfg)).To(Succeed())
	return cfg
}

// purgeJob is the Job template of the configs' job steps; the test control
// plane has no kubelet, so its container never runs.
func purgeJob() *batchv1.JobTemplateSpec {
	return &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers:    []corev1.Container{{Name: "purge", Image: "registry.example.com/purge:1"}},
	}}}}
}
