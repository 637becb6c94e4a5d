package webhook

import (
	"context"
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
)

// metadataReads counts the metadata reads a secretStore answers.
type metadataReads struct {
	*secretStore
	n    atomic.Int32
	fail error
}

func (m *metadataReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.n.Add(1)
		if m.fail != nil {
			return m.fail
		}
	}
	return m.secretStore.Get(ctx, key, obj, opts...)
}

// The receiver notices a rotated token without watching Secrets: it reads a
// token Secret's metadata at most once per interval, and the whole Secret
// only when its resourceVersion changed.
func TestPolledSecretMetadata(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "im-token"}
	api := &metadataReads{secretStore: &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1_700_000_000, 0))
	ts := newTokenSecrets(newPolledSecretMetadata(api, 5*time.Second, clk), api)
	token := func() string {
		sec, err := ts.Get(ctx, key)
		g.Expect(err).NotTo(HaveOccurred())
		return string(sec.Data["token"])
	}

	api.secrets[key] = secretAt("u1", "1", "one")
	for range 10 {
		g.Expect(token()).To(Equal("one"))
	}
	g.Expect(api.n.Load()).To(Equal(int32(1)), "metadata reads within one interval")
	g.Expect(api.reads.Load()).To(Equal(int32(1)), "whole reads of one version")

	// Rotated: the old token is served until the interval passes, then the
	// new one, with one more metadata read and one more whole read.
	api.secrets[key] = secretAt("u1", "2", "two")
	g.Expect(token()).To(Equal("one"))
	clk.SetTime(clk.Now().Add(5 * time.Second))
	g.Expect(token()).To(Equal("two"))
	g.Expect(token()).To(Equal("two"))
	g.Expect(api.n.Load()).To(Equal(int32(2)))
	g.Expect(api.reads.Load()).To(Equal(int32(2)))

	// Unchanged after another interval: a metadata read, no whole read.
	clk.SetTime(clk.Now().Add(5 * time.Second))
	g.Expect(token()).To(Equal("two"))
	g.Expect(api.n.Load()).To(Equal(int32(3)))
	g.Expect(api.reads.Load()).To(Equal(int32(2)))

	// The API server does not answer: the last answer stands, so signed
	// callbacks are still checked (and spooled) through the outage, and it
	// is asked again once per interval, not once per callback.
	clk.SetTime(clk.Now().Add(5 * time.Second))
	api.fail = apierrors.NewServiceUnavailable("etcd is slow")
	for range 10 {
		g.Expect(token()).To(Equal("two"))
	}
	g.Expect(api.n.Load()).To(Equal(int32(4)))
	clk.SetTime(clk.Now().Add(5 * time.Second))
	g.Expect(token()).To(Equal("two"))
	g.Expect(api.n.Load()).To(Equal(int32(5)))
	api.fail = nil
	clk.SetTime(clk.Now().Add(5 * time.Second))
	g.Expect(token()).To(Equal("two"))
	g.Expect(api.n.Load()).To(Equal(int32(6)))
	g.Expect(api.reads.Load()).To(Equal(int32(2)), "the same version is not read whole again")
}

// With no answer yet, a failed read is the caller's error: the token is
// unknown, and a callback cannot be checked without it.
func TestPolledSecretMetadataWithoutAnswerFails(t *testing.T) {
	g := NewWithT(t)
	key := types.NamespacedName{Namespace: "ns", Name: "im-token"}
	api := &metadataReads{secretStore: &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}, fail: apierrors.NewServiceUnavailable("down")}
	api.secrets[key] = secretAt("u1", "1", "one")
	p := newPolledSecretMetadata(api, 5*time.Second, clocktesting.NewFakePassiveClock(time.Unix(1_700_000_000, 0)))
	err := p.Get(context.Background(), key, secretMetadata())
	g.Expect(apierrors.IsServiceUnavailable(err)).To(BeTrue(), "got %v", err)
	api.fail = nil
	g.Expect(p.Get(context.Background(), key, secretMetadata())).To(Succeed(), "a failure is not remembered")
}

func TestPolledSecretMetadataRemembersMissing(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "gone"}
	api := &metadataReads{secretStore: &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1_700_000_000, 0))
	p := newPolledSecretMetadata(api, 5*time.Second, clk)
	for range 3 {
		err := p.Get(ctx, key, secretMetadata())
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "got %v", err)
	}
	g.Expect(api.n.Load()).To(Equal(int32(1)))

	// It refuses what it cannot do rather than answering wrongly.
	g.Expect(p.Get(ctx, key, &corev1.Secret{})).To(MatchError(ContainSubstring("cannot read")))
	g.Expect(p.List(ctx, &metav1.PartialObjectMetadataList{})).To(MatchError(ContainSubstring("not supported")))
}
