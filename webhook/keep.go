package webhook

import (
	"context"
	"errors"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// keep makes an accepted callback's FriendDeletion durable before ctx's
// deadline, the end of the callback's budget. It returns nil only when the
// API server or the spool holds it.
//
// The API server gets the budget up to spoolAfter from arrival; when it has
// not taken the object by then for a reason that may pass (it refuses
// connections, does not answer, or answers 5xx or 429), the object goes to
// the spool with the rest of the budget, and the replayer stores it later.
// A refusal no retry can fix (the object is invalid, too large, forbidden)
// is answered FAIL at once and never spooled: replaying it would fail the
// same way.
func (r *Receiver) keep(ctx context.Context, fd *snsv1alpha1.FriendDeletion) *rejection {
	if r.spool == nil {
		return r.store.create(ctx, fd)
	}
	storeCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		storeCtx, cancel = context.WithDeadline(ctx, deadline.Add(-(r.budget - r.spoolAfter)))
		defer cancel()
	}
	rej := r.store.create(storeCtx, fd)
	if rej == nil || !spoolable(rej) {
		return rej
	}
	return r.spoolWithin(ctx, fd, rej)
}

// spoolWithin writes fd to the spool, waiting no longer than ctx allows. A
// write that outlasts ctx may still commit; the callback is then answered
// FAIL although it will be stored, which costs nothing, while the reverse
// would lose it.
func (r *Receiver) spoolWithin(ctx context.Context, fd *snsv1alpha1.FriendDeletion, storeErr *rejection) *rejection {
	type result struct {
		duplicate bool
		err       error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		dup, err := r.spool.put(fd)
		done <- result{dup, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		r.metrics.spoolWrites.WithLabelValues(spoolWriteTimeout).Inc()
		return withCause(reject(http.StatusServiceUnavailable, ReasonSpoolFailed, "the FriendDeletion could not be stored or spooled in time"), ctx.Err())
	}
	r.metrics.spoolWriteDuration.Observe(time.Since(start).Seconds())
	switch {
	case res.err == nil && res.duplicate:
		r.metrics.spoolWrites.WithLabelValues(spoolWriteDuplicate).Inc()
		r.log.V(1).Info("callback already spooled", "namespace", fd.Namespace, "frienddeletion", fd.Name)
		return nil
	case res.err == nil:
		r.metrics.spoolWrites.WithLabelValues(spoolWriteSpooled).Inc()
		r.log.Info("callback spooled: the API server did not take it in time", "namespace", fd.Namespace, "frienddeletion", fd.Name, "error", causeText(storeErr))
		return nil
	case errors.Is(res.err, errSpoolFull):
		r.metrics.spoolWrites.WithLabelValues(spoolWriteFull).Inc()
		return withCause(reject(http.StatusServiceUnavailable, ReasonSpoolFull, "the FriendDeletion could not be stored and the spool is full"), storeErr.cause)
	default:
		r.metrics.spoolWrites.WithLabelValues(spoolWriteError).Inc()
		return withCause(reject(http.StatusServiceUnavailable, ReasonSpoolFailed, "the FriendDeletion could not be stored or spooled"), res.err)
	}
}

func causeText(rej *rejection) string {
	if rej.cause == nil {
		return rej.info
	}
	return rej.cause.Error()
}

// spoolable reports whether a failed store may be spooled: it was answered
// 503 (the store gave up on an error that may pass) and the error behind it
// is one a later try can get past.
func spoolable(rej *rejection) bool {
	if rej.status != http.StatusServiceUnavailable {
		return false
	}
	return rej.cause == nil || transient(rej.cause)
}

// transient reports whether a create that failed with err may succeed
// later: transport failures, time-outs, 429 and 5xx, except the 5xx answers
// that say the object itself cannot be stored (too large for etcd).
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true // connection refused, reset, EOF, TLS handshake time-out
	}
	switch {
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsForbidden(err),
		apierrors.IsUnauthorized(err), apierrors.IsNotFound(err), apierrors.IsRequestEntityTooLargeError(err),
		apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err), apierrors.IsUnsupportedMediaType(err):
		return false
	}
	if tooLarge(err) { // a 5xx from etcd saying so, as store.go reads it
		return false
	}
	code := int(status.Status().Code)
	return code == http.StatusTooManyRequests || code >= 500
}
