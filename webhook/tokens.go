package webhook

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// secretMetadata is the object the receiver reads a Secret's version
// through: metadata only, so that no token but the ones it uses ever sits
// in its heap.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}

// tokenSecrets reads the Secrets that hold callback tokens. It keeps a copy
// of each Secret it was asked for, and checks it against the Secret's
// metadata on every read: a copy whose resourceVersion is no longer the
// Secret's is read again from the API server, so a rotated token takes
// effect as soon as meta sees the change.
type tokenSecrets struct {
	// meta reads Secrets' metadata: in the operator, polled by name (see
	// polledSecretMetadata); in tests, a cache may stand in.
	meta client.Reader
	// direct reads from the API server.
	direct client.Reader

	mu     sync.Mutex
	copies map[types.NamespacedName]*corev1.Secret
	// missing holds when and what the API server last answered for a
	// Secret it did not give (see unreadable), so that callbacks to a
	// config whose Secret is missing, or not yet readable, do not each cost
	// an API request.
	missing map[types.NamespacedName]missingSecret
	// reads makes concurrent reads of one changed Secret one API request.
	reads singleflight.Group
	now   func() time.Time
}

// missingSecret is the API server's last answer for a Secret it did not
// give, and when it came.
type missingSecret struct {
	at  time.Time
	err error
}

// unreadable reports whether the API server's answer to a Secret read
// means the receiver cannot have that Secret for now: it does not exist,
// or the receiver may not read it. The operator grants the receiver each
// token Secret a CallbackConfig names (a Role per config, see
// controllers/receiver_access.go) moments after the config is created or
// changed, so a refusal is remembered as briefly as a missing Secret.
func unreadable(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsForbidden(err)
}

// missingTTL is how long the API server's word that a Secret is missing
// (or may not be read) is taken without asking again, while the cache does
// not see the Secret either. A Secret created in the meantime is read as soon as the cache
// sees it.
const missingTTL = 5 * time.Second

func newTokenSecrets(meta, direct client.Reader) *tokenSecrets {
	return &tokenSecrets{
		meta: meta, direct: direct, now: time.Now,
		copies:  map[types.NamespacedName]*corev1.Secret{},
		missing: map[types.NamespacedName]missingSecret{},
	}
}

// Get returns the Secret. The caller must not change it.
func (s *tokenSecrets) Get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	m := secretMetadata()
	err := s.meta.Get(ctx, key, m)
	switch {
	case unreadable(err):
		// The cache may lag behind a Secret created (or granted) a moment
		// ago: ask the API server before saying it is missing.
		m = nil
	case err != nil:
		return nil, err
	}
	s.mu.Lock()
	c := s.copies[key]
	miss, wasMissing := s.missing[key]
	s.mu.Unlock()
	if c != nil && m != nil && c.UID == m.UID && c.ResourceVersion == m.ResourceVersion {
		return c, nil
	}
	if m == nil && wasMissing && s.now().Sub(miss.at) < missingTTL {
		return nil, miss.err
	}
	v, err, _ := s.reads.Do(key.String(), func() (any, error) {
		fresh := &corev1.Secret{}
		err := s.direct.Get(ctx, key, fresh)
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case unreadable(err):
			delete(s.copies, key)
			s.missing[key] = missingSecret{at: s.now(), err: err}
			return nil, err
		case err != nil:
			return nil, err
		}
		fresh.ManagedFields = nil
		s.copies[key] = fresh
		delete(s.missing, key)
		return fresh, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*corev1.Secret), nil
}
