package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// grantedSecrets answers as the API server does for a ServiceAccount that
// may get only the Secrets it was granted: Forbidden for the others, and
// counts every request.
type grantedSecrets struct {
	*secretStore
	granted  map[types.NamespacedName]bool
	requests atomic.Int32
}

func (s *grantedSecrets) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	s.requests.Add(1)
	if !s.granted[key] {
		return apierrors.NewForbidden(corev1.Resource("secrets"), key.Name,
			fmt.Errorf(`User "system:serviceaccount:ops:receiver" cannot get resource "secrets" in the namespace %q`, key.Namespace))
	}
	return s.secretStore.Get(ctx, key, obj, opts...)
}

// The receiver reads only the token Secrets the controllers grant it, a
// moment after a config is created. Until then its read is refused: the
// refusal is remembered as briefly as a missing Secret (callbacks in the
// meantime cost no API request each), and it is not mistaken for an API
// server that does not answer: a token seen before and then refused (the
// grant moved to another Secret) is not used any more.
func TestTokenSecretsRememberARefusal(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "im-token"}
	api := &grantedSecrets{secretStore: &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{key: secretAt("u1", "1", "one")}},
		granted: map[types.NamespacedName]bool{}}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1_700_000_000, 0))
	ts := newTokenSecrets(newPolledSecretMetadata(api, tokenSecretPollInterval, clk), api)
	ts.now = clk.Now

	for range 100 {
		_, err := ts.Get(ctx, key)
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
	}
	g.Expect(api.requests.Load()).To(Equal(int32(2)), "100 callbacks before the grant cost one metadata and one whole read")

	// Granted: read once the remembered refusal is old.
	api.granted[key] = true
	_, err := ts.Get(ctx, key)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "still remembered, got %v", err)
	clk.SetTime(clk.Now().Add(max(tokenSecretPollInterval, missingTTL)))
	sec, err := ts.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(sec.Data["token"])).To(Equal("one"))

	// The grant is taken away: after the poll interval the token is not
	// used any more, as if the Secret were gone, unlike an outage (see
	// TestPolledSecretMetadata), where the last token stands.
	delete(api.granted, key)
	clk.SetTime(clk.Now().Add(tokenSecretPollInterval))
	_, err = ts.Get(ctx, key)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
	g.Expect(ts.copies).To(BeEmpty())
}

// A callback whose token Secret the receiver may not read yet is answered
// 503, as a missing Secret is, with an answer that says why.
func TestRefusedTokenSecretIsAnswered(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1_700_000_000, 0)
	rt := strconv.FormatInt(now.Unix(), 10)
	q := url.Values{"Sign": {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "RequestTime": {rt}}
	refused := apierrors.NewForbidden(corev1.Resource("secrets"), "im-token", fmt.Errorf("not granted"))
	token := func() (string, error) {
		return "", fmt.Errorf("%w: reading Secret im-token: %w", errToken, refused)
	}
	auth := &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}, MaxClockSkew: &metav1.Duration{Duration: time.Minute}}
	rej := checkAuth(auth, q, token, now)
	g.Expect(rej).NotTo(BeNil())
	g.Expect(rej.status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(rej.reason).To(Equal(ReasonTokenUnavailable))
	g.Expect(rej.info).To(ContainSubstring("may not read its Secret yet"))
	g.Expect(rej.cause).To(MatchError(ContainSubstring("forbidden")))

	missing := func() (string, error) {
		return "", fmt.Errorf("%w: reading Secret im-token: %w", errToken, apierrors.NewNotFound(corev1.Resource("secrets"), "im-token"))
	}
	rej = checkAuth(auth, q, missing, now)
	g.Expect(rej.status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(rej.info).To(Equal("callback authentication token is unavailable"))
}
