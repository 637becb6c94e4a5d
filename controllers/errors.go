package controllers

import (
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Errors have kinds. A transient error (the API server unreachable, a
// conflict, a quota not yet computed, RBAC not yet granted) is returned
// from Reconcile and retried with backoff. A permanent error is one no retry
// can fix: the same request would be refused the same way. It ends the step
// with the API server's message instead of retrying forever.

// permanentError marks an error that no retry can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// permanent marks err as one no retry can fix.
func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// isPermanent reports whether retrying err cannot help: errors marked
// permanent, and API server refusals of the request itself — Invalid (422),
// BadRequest (400), RequestEntityTooLarge (413), and a Forbidden (403)
// that an admission webhook or ValidatingAdmissionPolicy decided. Other
// Forbidden answers (RBAC, quota, a terminating namespace) may pass later.
func isPermanent(err error) bool {
	var p *permanentError
	switch {
	case err == nil:
		return false
	case errors.As(err, &p):
		return true
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsRequestEntityTooLargeError(err):
		return true
	case apierrors.IsForbidden(err):
		return isAdmissionDenial(err)
	}
	return false
}

// isAdmissionDenial reports whether a Forbidden answer came from an
// admission webhook or a ValidatingAdmissionPolicy, by the wording the API
// server gives those denials ("admission webhook %q denied the request",
// "ValidatingAdmissionPolicy '%s' with binding '%s' denied request").
func isAdmissionDenial(err error) bool {
	msg := err.Error()
	return (strings.Contains(msg, "admission webhook") && strings.Contains(msg, "denied the request")) ||
		(strings.Contains(msg, "ValidatingAdmissionPolicy") && strings.Contains(msg, "denied request"))
}
