package webhook

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Outcomes of storing a FriendDeletion, for the write latency metric.
const (
	storeCreated = "created"
	storeExists  = "already_exists"
	storeFailed  = "failed"
)

// writeMargin is kept back from the budget for answering the callback.
const writeMargin = 50 * time.Millisecond

// store creates FriendDeletions through the API server.
type store struct {
	client  client.Writer
	metrics *metrics
}

// create stores fd before ctx's deadline, retrying what may pass on a second
// try. An object of the same name already there is the same callback stored
// before, and counts as stored. It returns nil only when the object is
// stored.
func (s *store) create(ctx context.Context, fd *snsv1alpha1.FriendDeletion) *rejection {
	backoff := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		obj := fd
		if attempt > 0 {
			obj = fd.DeepCopy()
		}
		start := time.Now()
		err := s.client.Create(ctx, obj)
		outcome := storeFailed
		switch {
		case err == nil:
			outcome = storeCreated
		case apierrors.IsAlreadyExists(err):
			outcome = storeExists
			err = nil
		}
		s.metrics.writeDuration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
		if err == nil {
			return nil
		}
		if !retryable(err) {
			if rej := quotaExceeded(err); rej != nil {
				return rej
			}
			if tooLarge(err) {
				return withCause(reject(http.StatusRequestEntityTooLarge, ReasonObjectTooLarge, "the API server refused the FriendDeletion as too large: send fewer pairs per callback"), err)
			}
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				return withCause(reject(http.StatusInternalServerError, ReasonRejectedByAPIServer, "the API server refused the FriendDeletion"), err)
			}
			return withCause(reject(http.StatusServiceUnavailable, ReasonStoreFailed, "the FriendDeletion could not be stored"), err)
		}
		timeout := withCause(reject(http.StatusServiceUnavailable, ReasonStoreTimeout, "the FriendDeletion could not be stored in time"), err)
		deadline, ok := ctx.Deadline()
		if ctx.Err() != nil || (ok && time.Until(deadline) < backoff+writeMargin) {
			return timeout
		}
		select {
		case <-ctx.Done():
			return timeout
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// retryable reports whether a failed create may succeed when tried again:
// everything but a definite refusal by the API server, and an object too
// large for it, whichever way that is said.
func retryable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true // the loop stops on the deadline itself
	}
	if tooLarge(err) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true // transport trouble: connection refused, reset, EOF
	}
	code := int(status.Status().Code)
	switch {
	case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err):
		return true
	case code >= 500 || code == 0:
		return true
	}
	return false
}

// tooLargeMessages are what the API server says, in an error that is not a
// 413, when etcd or its gRPC connection refuses an object for its size.
var tooLargeMessages = []string{"request is too large", "ResourceExhausted", "larger than max"}

// tooLarge reports whether err says the object is too large to store.
func tooLarge(err error) bool {
	if apierrors.IsRequestEntityTooLargeError(err) {
		return true
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	msg := status.Status().Message
	for _, m := range tooLargeMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}
