package webhook

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// failingWriter answers every create with err and counts the attempts.
type failingWriter struct {
	client.Writer
	err      error
	attempts int
}

func (w *failingWriter) Create(context.Context, client.Object, ...client.CreateOption) error {
	w.attempts++
	return w.err
}

// The store retries what may pass on a second try, and answers at once what
// no retry can change, with the status that says why.
func TestStoreRetriesOnlyWhatMayPass(t *testing.T) {
	fdGR := schema.GroupResource{Group: snsv1alpha1.GroupVersion.Group, Resource: "frienddeletions"}
	etcdTooLarge := apierrors.NewInternalError(errors.New("etcdserver: request is too large"))
	grpcTooLarge := apierrors.NewInternalError(errors.New("rpc error: code = ResourceExhausted desc = trying to send message larger than max (3000000 vs. 2097152)"))
	for _, tc := range []struct {
		name   string
		err    error
		once   bool
		status int
		reason string
	}{
		{"request entity too large", apierrors.NewRequestEntityTooLargeError("limit is 3145728"), true, http.StatusRequestEntityTooLarge, ReasonObjectTooLarge},
		{"etcd: request is too large", etcdTooLarge, true, http.StatusRequestEntityTooLarge, ReasonObjectTooLarge},
		{"gRPC: message larger than max", grpcTooLarge, true, http.StatusRequestEntityTooLarge, ReasonObjectTooLarge},
		{"invalid", apierrors.NewInvalid(snsv1alpha1.GroupVersion.WithKind("FriendDeletion").GroupKind(), "fd-x", nil), true, http.StatusInternalServerError, ReasonRejectedByAPIServer},
		{"forbidden", apierrors.NewForbidden(fdGR, "fd-x", errors.New("quota")), true, http.StatusServiceUnavailable, ReasonStoreFailed},
		{"internal error", apierrors.NewInternalError(errors.New("etcd leader changed")), false, http.StatusServiceUnavailable, ReasonStoreTimeout},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), false, http.StatusServiceUnavailable, ReasonStoreTimeout},
		{"connection refused", errors.New("dial tcp 127.0.0.1:6443: connect: connection refused"), false, http.StatusServiceUnavailable, ReasonStoreTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			m, err := newMetrics(prometheus.NewRegistry())
			g.Expect(err).NotTo(HaveOccurred())
			w := &failingWriter{err: tc.err}
			s := &store{client: w, metrics: m}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			rej := s.create(ctx, &snsv1alpha1.FriendDeletion{})
			g.Expect(rej).NotTo(BeNil())
			g.Expect(rej.status).To(Equal(tc.status))
			g.Expect(rej.reason).To(Equal(tc.reason))
			if tc.once {
				g.Expect(w.attempts).To(Equal(1), "an error no retry can change is not retried")
			} else {
				g.Expect(w.attempts).To(BeNumerically(">", 1), "retried within the budget")
			}
		})
	}
}
