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
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// secretStore is a client.Reader over a map of Secrets that serves them
// whole or as metadata, and counts the whole reads.
type secretStore struct {
	secrets map[types.NamespacedName]*corev1.Secret
	reads   atomic.Int32
}

func (s *secretStore) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	_, whole := obj.(*corev1.Secret)
	if whole {
		s.reads.Add(1)
	}
	sec, ok := s.secrets[key]
	if !ok {
		return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
	}
	switch o := obj.(type) {
	case *metav1.PartialObjectMetadata:
		o.ObjectMeta = *sec.ObjectMeta.DeepCopy()
	case *corev1.Secret:
		sec.DeepCopyInto(o)
	}
	return nil
}

func (s *secretStore) List(context.Context, client.ObjectList, ...client.ListOption) error {
	panic("not used")
}

func secretAt(uid types.UID, rv, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "im-token", UID: uid, ResourceVersion: rv},
		Data:       map[string][]byte{"token": []byte(token)},
	}
}

func TestTokenSecretsReadEachVersionOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "im-token"}
	// cache is what the metadata informer has seen; api is the API server.
	cache := &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}
	api := &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}
	ts := newTokenSecrets(cache, api)
	token := func() string {
		sec, err := ts.Get(ctx, key)
		g.Expect(err).NotTo(HaveOccurred())
		return string(sec.Data["token"])
	}

	// Created a moment ago: the cache has not seen it; the API server has.
	api.secrets[key] = secretAt("u1", "1", "one")
	g.Expect(token()).To(Equal("one"))
	g.Expect(api.reads.Load()).To(Equal(int32(1)))

	// Once the cache has that version, it is served from the copy.
	cache.secrets[key] = secretAt("u1", "1", "")
	for range 5 {
		g.Expect(token()).To(Equal("one"))
	}
	g.Expect(api.reads.Load()).To(Equal(int32(1)))

	// Rotated: a new resourceVersion in the cache reads the Secret again.
	api.secrets[key] = secretAt("u1", "2", "two")
	cache.secrets[key] = secretAt("u1", "2", "")
	g.Expect(token()).To(Equal("two"))
	g.Expect(token()).To(Equal("two"))
	g.Expect(api.reads.Load()).To(Equal(int32(2)))

	// Deleted and created again under the same name, with its own UID.
	api.secrets[key] = secretAt("u2", "2", "three")
	cache.secrets[key] = secretAt("u2", "2", "")
	g.Expect(token()).To(Equal("three"))

	// Deleted: not found, and the copy is forgotten.
	delete(api.secrets, key)
	delete(cache.secrets, key)
	_, err := ts.Get(ctx, key)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "got %v", err)
	g.Expect(ts.copies).To(BeEmpty())
}

// A Secret that is missing is asked for once per missingTTL, not once per
// callback, and read at once when the cache sees it created.
func TestTokenSecretsRememberAMissingSecret(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "im-token"}
	cache := &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}
	api := &secretStore{secrets: map[types.NamespacedName]*corev1.Secret{}}
	ts := newTokenSecrets(cache, api)
	now := time.Unix(1700000000, 0)
	ts.now = func() time.Time { return now }

	for range 100 {
		_, err := ts.Get(ctx, key)
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "got %v", err)
	}
	g.Expect(api.reads.Load()).To(Equal(int32(1)), "100 callbacks to a missing Secret cost one API request")

	now = now.Add(missingTTL)
	_, err := ts.Get(ctx, key)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "got %v", err)
	g.Expect(api.reads.Load()).To(Equal(int32(2)), "asked again once the answer is old")

	// Created: the cache sees it, and it is read without waiting out the TTL.
	api.secrets[key] = secretAt("u1", "1", "one")
	cache.secrets[key] = secretAt("u1", "1", "")
	sec, err := ts.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(sec.Data["token"])).To(Equal("one"))
	g.Expect(ts.missing).To(BeEmpty())
}
