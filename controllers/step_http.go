package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// IdempotencyKeyHeader carries the FriendDeletion's UID on every attempt of
// an http step, so the receiving service can drop a repeat.
const IdempotencyKeyHeader = "Idempotency-Key"

// httpStepBody is the JSON document an http step POSTs.
type httpStepBody struct {
	Name        string                   `json:"name"`
	Namespace   string                   `json:"namespace"`
	SDKAppID    string                   `json:"sdkAppID"`
	Pairs       []snsv1alpha1.FriendPair `json:"pairs"`
	ClientIP    string                   `json:"clientIP,omitempty"`
	OptPlatform string                   `json:"optPlatform,omitempty"`
}

// reconcileHTTPStep POSTs the FriendDeletion to the step's URL until an
// attempt answers 2xx or maxAttempts attempts failed, waiting between
// attempts with exponential backoff and jitter.
//
// Each attempt is claimed before it is sent: attempts is incremented in the
// status under an optimistic lock, so a reconcile working from a stale
// cache, or a second manager, cannot send it too. Its outcome is written
// right after the answer. An attempt whose outcome was never written (the
// manager stopped mid-request) counts as spent; the next attempt carries
// the same Idempotency-Key.
//
// Sets the step condition: Running, Retrying, Succeeded or Failed.
func (r *FriendDeletionReconciler) reconcileHTTPStep(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.HTTPStep, name string) (ctrl.Result, error) {
	st := stepstatus.Find(fd, name)
	now := r.now()
	st.Request = stepstatus.Truncate("POST "+redactURL(spec.URL), 2100)
	if st.NextAttemptTime != nil && now.Before(st.NextAttemptTime) {
		return ctrl.Result{RequeueAfter: st.NextAttemptTime.Sub(now.Time)}, nil
	}
	maxAttempts := spec.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = 5
	}
	if st.Attempts >= maxAttempts {
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed,
			fmt.Sprintf("Attempt %d of %d was interrupted before its outcome was recorded; no attempts left.", st.Attempts, maxAttempts), now)
		return ctrl.Result{}, nil
	}

	// Claim the attempt.
	attempt := st.Attempts + 1
	st.Attempts, st.NextAttemptTime = attempt, nil
	if attempt == 1 {
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning,
			fmt.Sprintf("Sending attempt 1 of %d.", maxAttempts), now)
	}
	summarize(fd, now)
	if err := p.Patch(ctx, fd); err != nil {
		if apierrors.IsConflict(err) {
			ctrl.LoggerFrom(ctx).V(1).Info("http step attempt already claimed or status stale; not sending", "attempt", attempt)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("claiming attempt %d: %w", attempt, err)
	}

	sendErr := r.postFriendDeletion(ctx, fd, spec)
	now = r.now()
	record := func(st *snsv1alpha1.StepStatus) {
		switch {
		case sendErr == nil:
			stepstatus.Set(st, snsv1alpha1.PhaseSucceeded, fmt.Sprintf("Attempt %d of %d succeeded.", attempt, maxAttempts), now)
		case attempt >= maxAttempts:
			stepstatus.Set(st, snsv1alpha1.PhaseFailed, fmt.Sprintf("Attempt %d of %d failed: %v", attempt, maxAttempts, sendErr), now)
		default:
			next := metav1.NewTime(now.Add(httpBackoff(attempt, r.Options, rand.Float64())).Truncate(time.Second))
			stepstatus.Set(st, snsv1alpha1.PhaseRunning, fmt.Sprintf("Attempt %d of %d failed: %v; next attempt at %s.", attempt, maxAttempts, sendErr, next.UTC().Format(time.RFC3339)), now)
			st.NextAttemptTime = &next
		}
	}
	ctrl.LoggerFrom(ctx).V(1).Info("http step attempt done", "attempt", attempt, "error", sendErr)
	if err := r.recordHTTPAttempt(ctx, p, fd, name, attempt, record); err != nil {
		return ctrl.Result{}, fmt.Errorf("recording attempt %d: %w", attempt, err)
	}
	if st = stepstatus.Find(fd, name); st != nil && st.NextAttemptTime != nil {
		return ctrl.Result{RequeueAfter: max(st.NextAttemptTime.Sub(r.now().Time), time.Millisecond)}, nil
	}
	return ctrl.Result{}, nil
}

// recordHTTPAttempt writes an attempt's outcome at once. If the object
// changed since the claim, it re-reads it from the API server and writes the
// outcome there, unless another attempt was claimed meanwhile.
func (r *FriendDeletionReconciler) recordHTTPAttempt(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, name string, attempt int32, record func(*snsv1alpha1.StepStatus)) error {
	for try := 0; ; try++ {
		st := stepstatus.Find(fd, name)
		if st == nil || st.Attempts != attempt || st.Phase != snsv1alpha1.PhaseRunning {
			return nil
		}
		record(st)
		reason := stepstatus.DefaultReason(st.Phase)
		if st.NextAttemptTime != nil {
			reason = snsv1alpha1.ReasonRetrying
		}
		stepstatus.Mark(fd, st, st.Phase, reason, st.Message, r.now())
		summarize(fd, r.now())
		err := p.Patch(ctx, fd)
		if !apierrors.IsConflict(err) || try == 5 {
			return err
		}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(fd), fd); err != nil {
			return err
		}
		p.Rebase(fd)
	}
}

// postFriendDeletion sends one attempt: the JSON document, the headers from
// the step's Secret, and the idempotency key. Any answer but 2xx is an
// error.
func (r *FriendDeletionReconciler) postFriendDeletion(ctx context.Context, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.HTTPStep) error {
	headers, err := r.httpHeaders(ctx, fd.Namespace, spec.HeadersSecretRef)
	if err != nil {
		return err
	}
	body, err := json.Marshal(httpStepBody{
		Name: fd.Name, Namespace: fd.Namespace, SDKAppID: fd.Spec.SDKAppID, Pairs: fd.Spec.Pairs,
		ClientIP: fd.Spec.ClientIP, OptPlatform: fd.Spec.OptPlatform,
	})
	if err != nil {
		return fmt.Errorf("encoding body: %w", err)
	}
	timeout := 10 * time.Second
	if spec.Timeout != nil && spec.Timeout.Duration > 0 {
		timeout = spec.Timeout.Duration
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdempotencyKeyHeader, string(fd.UID))
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "friend-deletion-operator")
	}
	resp, err := r.HTTP.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is in the step's request already
		}
		return fmt.Errorf("POST: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := fmt.Sprintf("POST returned %s", resp.Status)
		if s := strings.TrimSpace(string(snippet)); s != "" {
			msg += ": " + s
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// httpHeaders reads the headers Secret from the API server (Secrets are
// not cached): each key is a header name, its value the header's value.
func (r *FriendDeletionReconciler) httpHeaders(ctx context.Context, ns string, ref *snsv1alpha1.SecretRef) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("headers Secret %q not found", ref.Name)
		}
		return nil, fmt.Errorf("reading headers Secret %q: %w", ref.Name, err)
	}
	h := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		h[k] = strings.TrimSpace(string(v))
	}
	return h, nil
}

// httpBackoff is the wait after a failed attempt (1-based): base doubled
// for each attempt before it, at most max, plus up to jitter of it picked
// by rnd (in [0,1)).
func httpBackoff(attempt int32, o Options, rnd float64) time.Duration {
	d := float64(o.HTTPBackoffBase) * math.Pow(2, float64(attempt-1))
	if d > float64(o.HTTPBackoffMax) {
		d = float64(o.HTTPBackoffMax)
	}
	return time.Duration(d * (1 + o.HTTPBackoffJitter*rnd))
}

// redactURL drops the query, fragment and credentials from a URL, for the
// status.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment, u.ForceQuery = nil, "", "", "", false
	return u.String()
}

// newHTTPClient is the client of http steps.
func newHTTPClient(o Options) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = o.HTTPMaxIdleConnsPerHost
	return &http.Client{
		Transport: t,
		// Redirects are followed for 307 and 308 only, which keep the POST.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}
