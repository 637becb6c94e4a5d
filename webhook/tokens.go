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
	// missing holds when the API server last said a Secret does not exist,
	// so that callbacks to a config whose Secret is missing do not each
	// cost an API request.
	missing map[types.NamespacedName]time.Time
	// reads makes concurrent reads of one changed Secret one API request.
	reads singleflight.Group
	now   func() time.Time
}

// missingTTL is how long the API server's word that a Secret is missing is
// taken without asking again, while the cache does not see the Secret
// either. A Secret created in the meantime is read as soon as the cache
// sees it.
const missingTTL = 5 * time.Second

func newTokenSecrets(meta, direct client.Reader) *tokenSecrets {
	return &tokenSecrets{
		meta: meta, direct: direct, now: time.Now,
		copies:  map[types.NamespacedName]*corev1.Secret{},
		missing: map[types.NamespacedName]time.Time{},
	}
}

// Get returns the Secret. The caller must not change it.
func (s *tokenSecrets) Get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	m := secretMetadata()
	err := s.meta.Get(ctx, key, m)
	switch {
	case apierrors.IsNotFound(err):
		// The cache may lag behind a Secret created a moment ago: ask the
		// API server before saying it is missing.
		m = nil
	case err != nil:
		return nil, err
	}
	s.mu.Lock()
	c := s.copies[key]
	missingSince, wasMissing := s.missing[key]
	s.mu.Unlock()
	if c != nil && m != nil && c.UID == m.UID && c.ResourceVersion == m.ResourceVersion {
		return c, nil
	}
	if m == nil && wasMissing && s.now().Sub(missingSince) < missingTTL {
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
	}
	v, err, _ := s.reads.Do(key.String(), func() (any, error) {
		fresh := &corev1.Secret{}
		err := s.direct.Get(ctx, key, fresh)
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case apierrors.IsNotFound(err):
			delete(s.copies, key)
			s.missing[key] = s.now()
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
