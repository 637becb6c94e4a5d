package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Run(m, func(e *testenv.Env) { env = e })
}

func validConfig(ns string) *snsv1alpha1.CallbackConfig {
	return &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "app-"},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: "1400000001",
			Auth: &snsv1alpha1.CallbackAuth{
				TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-callback", Key: "token"},
			},
			Cleanup: []snsv1alpha1.CleanupStep{{
				Name: "purge-chat-history",
				Job: &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers:    []corev1.Container{{Name: "purge", Image: "example.com/purge:1"}},
					},
				}}},
			}},
		},
	}
}

func validDeletion(ns string, pairs int) *snsv1alpha1.FriendDeletion {
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "fdel-"},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName:  "app",
			SDKAppID:    "1400000001",
			PairCount:   int32(pairs),
			ClientIP:    "127.0.0.1",
			OptPlatform: "RESTAPI",
			ReceivedAt:  metav1.NewTime(time.Unix(1669872112, 0)),
		},
	}
	for i := range pairs {
		fd.Spec.Pairs = append(fd.Spec.Pairs, snsv1alpha1.FriendPair{From: "id", To: fmt.Sprintf("id%d", i)})
	}
	return fd
}

// expectInvalid asserts the API server refused the object as Invalid, with a
// message that names the field and the rule.
func expectInvalid(g Gomega, err error, fragments ...string) {
	g.Expect(err).To(HaveOccurred())
	g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
	for _, f := range fragments {
		g.Expect(err.Error()).To(ContainSubstring(f))
	}
}

func TestCallbackConfigValidation(t *testing.T) {
	ns := env.Namespace(t)
	cases := []struct {
		name   string
		mutate func(*snsv1alpha1.CallbackConfig)
		want   []string
	}{
		{"non-numeric sdkAppID", func(c *snsv1alpha1.CallbackConfig) { c.Spec.SDKAppID = "14000abc" },
			[]string{"spec.sdkAppID", "should match '^[0-9]{1,20}$'"}},
		{"sdkAppID over 20 digits", func(c *snsv1alpha1.CallbackConfig) { c.Spec.SDKAppID = strings.Repeat("1", 21) },
			[]string{"spec.sdkAppID", "may not be more than 20"}},
		{"no cleanup steps", func(c *snsv1alpha1.CallbackConfig) { c.Spec.Cleanup = []snsv1alpha1.CleanupStep{} },
			[]string{"spec.cleanup", "should have at least 1 items"}},
		{"duplicate step names", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup = append(c.Spec.Cleanup, snsv1alpha1.CleanupStep{
				Name: c.Spec.Cleanup[0].Name, External: &snsv1alpha1.ExternalStep{}})
		}, []string{"spec.cleanup[1]", "Duplicate value"}},
		{"step with two kinds", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].HTTP = &snsv1alpha1.HTTPStep{URL: "https://backend.example.com/hooks/friend-deleted"}
		}, []string{"spec.cleanup[0]", "a cleanup step sets exactly one of job, http or external"}},
		{"step with no kind", func(c *snsv1alpha1.CallbackConfig) { c.Spec.Cleanup[0].Job = nil },
			[]string{"spec.cleanup[0]", "a cleanup step sets exactly one of job, http or external"}},
		{"step name not a DNS label", func(c *snsv1alpha1.CallbackConfig) { c.Spec.Cleanup[0].Name = "Purge_History" },
			[]string{"spec.cleanup[0].name", "should match"}},
		{"http url not http(s)", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Job = nil
			c.Spec.Cleanup[0].HTTP = &snsv1alpha1.HTTPStep{URL: "ftp://backend.example.com/x"}
		}, []string{"spec.cleanup[0].http.url", "url must be an absolute http or https URL"}},
		{"http maxAttempts over 20", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Job = nil
			c.Spec.Cleanup[0].HTTP = &snsv1alpha1.HTTPStep{URL: "https://backend.example.com/x", MaxAttempts: 21}
		}, []string{"spec.cleanup[0].http.maxAttempts", "should be less than or equal to 20"}},
		{"job restartPolicy Always", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
		}, []string{"spec.cleanup[0].job", "restartPolicy must be Never or OnFailure"}},
		{"job ttlSecondsAfterFinished", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Job.Spec.TTLSecondsAfterFinished = ptr.To[int32](0)
		}, []string{"spec.cleanup[0].job", "ttlSecondsAfterFinished is not allowed"}},
		{"batch without job", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Job = nil
			c.Spec.Cleanup[0].HTTP = &snsv1alpha1.HTTPStep{URL: "https://example.com/hook"}
			c.Spec.Cleanup[0].Batch = &snsv1alpha1.JobBatch{MaxDeletions: 10}
		}, []string{"spec.cleanup[0]", "batch is only valid with job"}},
		{"batch maxDeletions over 1000", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Batch = &snsv1alpha1.JobBatch{MaxDeletions: 1001}
		}, []string{"spec.cleanup[0].batch.maxDeletions", "should be less than or equal to 1000"}},
		{"batch maxDeletions 0", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Batch = &snsv1alpha1.JobBatch{MaxDeletions: 0}
		}, []string{"spec.cleanup[0].batch.maxDeletions", "should be greater than or equal to 1"}},
		{"batch maxWait over 10m", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Cleanup[0].Batch = &snsv1alpha1.JobBatch{MaxDeletions: 10, MaxWait: &metav1.Duration{Duration: time.Hour}}
		}, []string{"spec.cleanup[0].batch.maxWait", "maxWait must be between 0s and 10m"}},
		{"bad CIDR", func(c *snsv1alpha1.CallbackConfig) { c.Spec.AllowedSourceCIDRs = []snsv1alpha1.CIDR{"10.0.0.300/8"} },
			[]string{"spec.allowedSourceCIDRs[0]", "must be a CIDR"}},
		{"maxClockSkew too large", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Auth.MaxClockSkew = &metav1.Duration{Duration: 2 * time.Hour}
		}, []string{"spec.auth.maxClockSkew", "maxClockSkew must be between 1s and 1h"}},
		{"verify endpoint with a query", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Verify = validVerify()
			c.Spec.Verify.Endpoint = "https://adminapisgp.im.qcloud.com/?sdkappid=1"
		}, []string{"spec.verify.endpoint", "endpoint must be an absolute http or https URL without a query"}},
		{"verify endpoint not a URL", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Verify = validVerify()
			c.Spec.Verify.Endpoint = "adminapisgp.im.qcloud.com"
		}, []string{"spec.verify.endpoint", "endpoint must be an absolute http or https URL"}},
		{"verify identifier not a UserID", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Verify = validVerify()
			c.Spec.Verify.Identifier = "admin@example"
		}, []string{"spec.verify.identifier", "should match"}},
		{"verify rate over Tencent's limit", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Verify = validVerify()
			c.Spec.Verify.RequestsPerSecond = 201
		}, []string{"spec.verify.requestsPerSecond", "should be less than or equal to 200"}},
		{"verify unknown stillFriends policy", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Verify = validVerify()
			c.Spec.Verify.StillFriends = "Ignore"
		}, []string{"spec.verify.stillFriends", "Unsupported value"}},
		{"verify without a secret key", func(c *snsv1alpha1.CallbackConfig) {
			c.Spec.Verify = validVerify()
			c.Spec.Verify.SecretKeyRef = snsv1alpha1.SecretKeyRef{}
		}, []string{"spec.verify.secretKeyRef.name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := validConfig(ns)
			tc.mutate(c)
			expectInvalid(g, env.Client.Create(t.Context(), c), tc.want...)
		})
	}
}

func validVerify() *snsv1alpha1.Verify {
	return &snsv1alpha1.Verify{
		Endpoint: "https://adminapisgp.im.qcloud.com", Identifier: "administrator",
		SecretKeyRef: snsv1alpha1.SecretKeyRef{Name: "im-app-key", Key: "secretKey"},
	}
}

func TestCallbackConfigVerifyDefaults(t *testing.T) {
	g := NewWithT(t)
	c := validConfig(env.Namespace(t))
	c.Spec.Verify = validVerify()
	g.Expect(env.Client.Create(t.Context(), c)).To(Succeed())
	g.Expect(c.Spec.Verify.RequestsPerSecond).To(Equal(int32(20)))
	g.Expect(c.Spec.Verify.StillFriends).To(Equal(snsv1alpha1.StillFriendsSkip))
}

func TestCallbackConfigDefaults(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	c := validConfig(ns)
	c.Spec.Cleanup = append(c.Spec.Cleanup, snsv1alpha1.CleanupStep{
		Name: "notify-backend", HTTP: &snsv1alpha1.HTTPStep{URL: "https://backend.example.com/hooks/friend-deleted",
			CABundleRef: &snsv1alpha1.ConfigMapKeyRef{Name: "backend-ca"}}})
	// OnFailure is a restartPolicy a Job takes.
	c.Spec.Cleanup[0].Job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	c.Spec.Cleanup[0].Batch = &snsv1alpha1.JobBatch{MaxDeletions: 100}
	g.Expect(env.Client.Create(t.Context(), c)).To(Succeed())

	got := &snsv1alpha1.CallbackConfig{}
	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(c), got)).To(Succeed())
	g.Expect(got.Spec.Auth.MaxClockSkew.Duration).To(Equal(60 * time.Second))
	g.Expect(got.Spec.Retention.Succeeded.Duration).To(Equal(24 * time.Hour))
	g.Expect(got.Spec.Retention.Failed.Duration).To(Equal(168 * time.Hour))
	g.Expect(got.Spec.Cleanup[1].HTTP.Timeout.Duration).To(Equal(10 * time.Second))
	g.Expect(got.Spec.Cleanup[1].HTTP.MaxAttempts).To(Equal(int32(5)))
	g.Expect(got.Spec.Cleanup[1].HTTP.CABundleRef.Key).To(Equal("ca.crt"))
	g.Expect(got.Spec.Cleanup[0].Batch.MaxWait.Duration).To(Equal(5 * time.Second))
}

func TestFriendDeletionValidation(t *testing.T) {
	ns := env.Namespace(t)
	cases := []struct {
		name   string
		mutate func(*snsv1alpha1.FriendDeletion)
		want   []string
	}{
		{"2001 pairs", func(fd *snsv1alpha1.FriendDeletion) {
			*fd = *validDeletion(ns, snsv1alpha1.MaxPairs+1)
			fd.Spec.PairCount = snsv1alpha1.MaxPairs
		}, []string{"spec.pairs", "must have at most 2000 items"}},
		{"no pairs", func(fd *snsv1alpha1.FriendDeletion) { fd.Spec.Pairs = []snsv1alpha1.FriendPair{} },
			[]string{"spec.pairs", "should have at least 1 items"}},
		{"pairCount disagrees", func(fd *snsv1alpha1.FriendDeletion) { fd.Spec.PairCount = 2 },
			[]string{"spec", "pairCount must equal the number of pairs"}},
		{"empty account", func(fd *snsv1alpha1.FriendDeletion) { fd.Spec.Pairs[0].To = "" },
			[]string{"spec.pairs[0].to", "should be at least 1 chars long"}},
		{"non-numeric sdkAppID", func(fd *snsv1alpha1.FriendDeletion) { fd.Spec.SDKAppID = "app" },
			[]string{"spec.sdkAppID", "should match"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			fd := validDeletion(ns, 1)
			tc.mutate(fd)
			expectInvalid(g, env.Client.Create(t.Context(), fd), tc.want...)
		})
	}
}

func TestFriendDeletionAcceptsMaxPairs(t *testing.T) {
	g := NewWithT(t)
	fd := validDeletion(env.Namespace(t), snsv1alpha1.MaxPairs)
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())
	got := &snsv1alpha1.FriendDeletion{}
	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(fd), got)).To(Succeed())
	g.Expect(got.Spec.Pairs).To(HaveLen(snsv1alpha1.MaxPairs))
}

func TestFriendDeletionSpecIsImmutable(t *testing.T) {
	g := NewWithT(t)
	fd := validDeletion(env.Namespace(t), 2)
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())

	edited := fd.DeepCopy()
	edited.Spec.Pairs[1].To = "someone-else"
	expectInvalid(g, env.Client.Update(t.Context(), edited), "spec", "spec is immutable")

	// Status stays writable: that is where progress goes.
	fd.Status.Phase = snsv1alpha1.PhaseRunning
	g.Expect(env.Client.Status().Update(t.Context(), fd)).To(Succeed())
	// Labels stay writable too.
	fd.Labels = map[string]string{"team": "chat"}
	g.Expect(env.Client.Update(t.Context(), fd)).To(Succeed())
}

func TestKubectlExplainShowsFieldDocs(t *testing.T) {
	g := NewWithT(t)
	out, err := env.Kubectl(t, "explain", "frienddeletion.spec.pairs")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("GROUP:      sns.imcallback.io"))
	g.Expect(out).To(ContainSubstring("pairs is the callback's PairList"))
	g.Expect(out).To(MatchRegexp(`from\s+<string> -required-`))

	out, err = env.Kubectl(t, "explain", "cbc.spec.auth.tokenSecretRef")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("callback authentication"))
}

// TestSamplesAreAccepted applies every object in config/samples the way a
// user would, and checks the API server takes them.
func TestSamplesAreAccepted(t *testing.T) {
	g := NewWithT(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "chat"}}
	g.Expect(client.IgnoreAlreadyExists(env.Client.Create(t.Context(), ns))).To(Succeed())

	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "sns_*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files).To(HaveLen(2))
	kinds := map[string]bool{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		g.Expect(err).NotTo(HaveOccurred())
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			obj := &unstructured.Unstructured{}
			g.Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed(), f)
			g.Expect(env.Client.Create(t.Context(), obj)).To(Succeed(), "%s: %s", f, obj.GetKind())
			kinds[obj.GetKind()] = true
		}
	}
	g.Expect(kinds).To(HaveKey("CallbackConfig"))
	g.Expect(kinds).To(HaveKey("FriendDeletion"))

	got := &snsv1alpha1.CallbackConfig{}
	g.Expect(env.Client.Get(t.Context(), client.ObjectKey{Namespace: "chat", Name: "chat-app"}, got)).To(Succeed())
	g.Expect(got.Spec.Cleanup).To(HaveLen(2))
	g.Expect(got.Spec.Cleanup[0].Job.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example.com/chat/purge-history:1.4.2"))
}

// TestRetentionCountBounds: maxSucceeded and maxFailed are unset by
// default (no count limit) and take 0 to 100000.
func TestRetentionCountBounds(t *testing.T) {
	ns := env.Namespace(t)
	for _, tc := range []struct {
		name      string
		succeeded *int32
		failed    *int32
		ok        bool
	}{
		{"unset", nil, nil, true},
		{"bounds", ptr.To[int32](0), ptr.To[int32](100000), true},
		{"negative", ptr.To[int32](-1), nil, false},
		{"too many", nil, ptr.To[int32](100001), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := validConfig(ns)
			c.Spec.Retention.MaxSucceeded, c.Spec.Retention.MaxFailed = tc.succeeded, tc.failed
			err := env.Client.Create(t.Context(), c)
			if tc.ok {
				g.Expect(err).NotTo(HaveOccurred())
				got := &snsv1alpha1.CallbackConfig{}
				g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(c), got)).To(Succeed())
				g.Expect(got.Spec.Retention.MaxSucceeded).To(Equal(tc.succeeded))
				g.Expect(got.Spec.Retention.KeepFinishedJobs).To(BeFalse())
				return
			}
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
			g.Expect(err.Error()).To(ContainSubstring("spec.retention.max"))
		})
	}
}
