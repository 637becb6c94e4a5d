package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
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

// IdempotencyKeyHeader carries "<FriendDeletion UID>/<step name>" on every
// attempt of an http step, so the receiving service can drop a repeat.
const IdempotencyKeyHeader = "Idempotency-Key"

// idempotencyKey is the Idempotency-Key of a step: the same for every
// attempt of the step, different for each step.
func idempotencyKey(fd *snsv1alpha1.FriendDeletion, step string) string {
	return string(fd.UID) + "/" + step
}

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
// attempt answers 2xx, an answer shows retrying cannot help, or maxAttempts
// attempts failed, waiting between attempts with exponential backoff and
// jitter (longer when the answer carries Retry-After).
//
// Each attempt is claimed before it is sent: attempts is incremented in the
// status under an optimistic lock, so a reconcile working from a stale
// cache, or a second manager, cannot send it too. The request is then sent
// off the reconcile worker, at most HTTPConcurrencyPerConfig at once per
// CallbackConfig, so a slow endpoint holds no worker; its outcome is
// written as soon as the answer is in, and that write reconciles the
// FriendDeletion again. An attempt whose outcome was never written (the
// manager stopped mid-request) counts as spent; the next attempt carries
// the same Idempotency-Key.
//
// Sets the step condition: Running, Retrying, Succeeded or Failed.
func (r *FriendDeletionReconciler) reconcileHTTPStep(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.HTTPStep, name string) (ctrl.Result, error) {
	st := stepstatus.Find(fd, name)
	now := r.now()
	st.Request = stepstatus.Truncate("POST "+redactURL(spec.URL), 2100)
	flights := r.httpFlights()
	key, cfgKey := idempotencyKey(fd, name), fd.Namespace+"/"+fd.Spec.ConfigName
	if deadline, ok := flights.sending(key); ok && st.NextAttemptTime == nil {
		// The outcome's status write reconciles again; this is a fallback.
		return ctrl.Result{RequeueAfter: max(time.Until(deadline), 0) + time.Second}, nil
	}
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
	timeout := 10 * time.Second
	if spec.Timeout != nil && spec.Timeout.Duration > 0 {
		timeout = spec.Timeout.Duration
	}
	if !flights.start(key, cfgKey, time.Now().Add(timeout), client.ObjectKeyFromObject(fd)) {
		// The config has as many requests in flight as it may: the
		// FriendDeletion waits in line and is woken when a slot frees
		// (the requeue is a fallback). News this reconcile found is
		// written at once, not held in memory for as long as the line
		// lasts: the step before's outcome (its Job, finished, may be
		// deleted meanwhile, and a restart must not run it again), a
		// verification's answers. Otherwise nothing is written until
		// the claim.
		if !verificationUnwritten(p, fd) && !stepOutcomeUnwritten(p, fd) {
			deferStatus(ctx)
		}
		return ctrl.Result{RequeueAfter: 5*time.Second + rand.N(5*time.Second)}, nil
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
		r.freeSlot(key, cfgKey)
		if apierrors.IsConflict(err) {
			ctrl.LoggerFrom(ctx).V(1).Info("http step attempt already claimed or status stale; not sending", "attempt", attempt)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("claiming attempt %d: %w", attempt, err)
	}
	deferStatus(ctx) // the claim is written; the outcome is written by the sender

	// The reconcile context lives as long as the controller, so stopping
	// the manager cancels the request (the attempt then counts as spent).
	claimed, spec := fd.DeepCopy(), spec.DeepCopy()
	go func() {
		defer r.freeSlot(key, cfgKey)
		r.sendHTTPAttempt(ctx, claimed, spec, name, attempt, maxAttempts)
	}()
	return ctrl.Result{RequeueAfter: timeout + 5*time.Second}, nil
}

// stepOutcomeUnwritten reports whether fd holds a step's outcome (Succeeded
// or Failed) that the API server does not have yet: a step this reconcile
// finished.
func stepOutcomeUnwritten(p *statusPatcher, fd *snsv1alpha1.FriendDeletion) bool {
	for _, st := range fd.Status.Steps {
		if !st.Phase.Finished() {
			continue
		}
		if b := stepstatus.Find(p.base, st.Name); b == nil || b.Phase != st.Phase {
			return true
		}
	}
	return false
}

// sendHTTPAttempt sends a claimed attempt and writes its outcome.
func (r *FriendDeletionReconciler) sendHTTPAttempt(ctx context.Context, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.HTTPStep, name string, attempt, maxAttempts int32) {
	log := ctrl.LoggerFrom(ctx)
	res := r.postFriendDeletion(ctx, fd, spec, name)
	if ctx.Err() != nil {
		return // the manager is stopping; the attempt counts as spent
	}
	now := r.now()
	record := func(st *snsv1alpha1.StepStatus) {
		switch {
		case res.err == nil:
			stepstatus.Set(st, snsv1alpha1.PhaseSucceeded, fmt.Sprintf("Attempt %d of %d succeeded.", attempt, maxAttempts), now)
		case res.final:
			stepstatus.Set(st, snsv1alpha1.PhaseFailed, fmt.Sprintf("Attempt %d of %d failed: %v; not retried.", attempt, maxAttempts, res.err), now)
		case attempt >= maxAttempts:
			stepstatus.Set(st, snsv1alpha1.PhaseFailed, fmt.Sprintf("Attempt %d of %d failed: %v", attempt, maxAttempts, res.err), now)
		default:
			wait := nextAttemptWait(attempt, res.retryAfter, r.Options, rand.Float64())
			next := metav1.NewTime(now.Add(wait).Truncate(time.Second))
			stepstatus.Set(st, snsv1alpha1.PhaseRunning, fmt.Sprintf("Attempt %d of %d failed: %v; next attempt at %s.", attempt, maxAttempts, res.err, next.UTC().Format(time.RFC3339)), now)
			st.NextAttemptTime = &next
		}
	}
	log.V(1).Info("http step attempt done", "attempt", attempt, "error", res.err)
	p := newStatusPatcher(r.Client, fd)
	p.onWrite = func(before, after *snsv1alpha1.FriendDeletion) { r.emit(after, before, after) }
	if err := r.recordHTTPAttempt(ctx, p, fd, name, attempt, record); err != nil {
		// Counted as spent: the next reconcile claims the next attempt.
		log.Error(err, "recording http step attempt", "attempt", attempt)
	}
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

// httpResult is the outcome of one attempt.
type httpResult struct {
	// err is nil when the attempt succeeded.
	err error
	// final is set when retrying cannot help (a redirect, a 4xx other than
	// 408 and 429): the step fails at once.
	final bool
	// retryAfter is how long the answer's Retry-After asked to wait, if it did.
	retryAfter time.Duration
}

// postFriendDeletion sends one attempt: the JSON document, the headers from
// the step's Secret, and the idempotency key, through a client that trusts
// the step's CA bundle when it names one.
func (r *FriendDeletionReconciler) postFriendDeletion(ctx context.Context, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.HTTPStep, step string) httpResult {
	headers, err := r.httpHeaders(ctx, fd.Namespace, spec.HeadersSecretRef)
	if err != nil {
		return httpResult{err: err}
	}
	hc, err := r.httpClientFor(ctx, fd.Namespace, spec.CABundleRef)
	if err != nil {
		return httpResult{err: err}
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(httpStepBody{
		Name: fd.Name, Namespace: fd.Namespace, SDKAppID: fd.Spec.SDKAppID, Pairs: stepPairs(fd),
		ClientIP: fd.Spec.ClientIP, OptPlatform: fd.Spec.OptPlatform,
	}); err != nil {
		return httpResult{err: fmt.Errorf("encoding body: %w", err)}
	}
	timeout := 10 * time.Second
	if spec.Timeout != nil && spec.Timeout.Duration > 0 {
		timeout = spec.Timeout.Duration
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.URL, &body)
	if err != nil {
		return httpResult{err: fmt.Errorf("building request: %w", err), final: true}
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdempotencyKeyHeader, idempotencyKey(fd, step))
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "friend-deletion-operator")
	}
	resp, err := hc.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is in the step's request already
		}
		return httpResult{err: fmt.Errorf("POST: %w", err)}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	return httpAnswer(resp.StatusCode, resp.Status, resp.Header, strings.TrimSpace(string(snippet)), r.Options.Clock.Now())
}

// httpAnswer decides what an answer means: 2xx succeeds; a redirect is not
// followed and fails the step (following it could turn the POST into a GET
// or send the headers Secret to another host); 408 and 429 are retried, any
// other 4xx fails the step at once; the rest (5xx) is retried. Retry-After,
// in seconds or as an HTTP date, is read on any answer that is retried.
func httpAnswer(code int, status string, h http.Header, snippet string, now time.Time) httpResult {
	if code >= 200 && code <= 299 {
		return httpResult{}
	}
	msg := "POST returned " + status
	if snippet != "" {
		msg += ": " + snippet
	}
	switch {
	case code >= 300 && code <= 399:
		loc := "no Location"
		if l := h.Get("Location"); l != "" {
			loc = "Location " + redactURL(l)
		}
		return httpResult{err: fmt.Errorf("POST returned %s (%s); redirects are not followed: set url to the final address", status, loc), final: true}
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
	case code >= 400 && code <= 499:
		return httpResult{err: errors.New(msg), final: true}
	}
	return httpResult{err: errors.New(msg), retryAfter: retryAfter(h.Get("Retry-After"), now)}
}

// retryAfter reads a Retry-After value: a number of seconds or an HTTP date.
// It is 0 when absent, unreadable or in the past.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(math.MaxInt64/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
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

// httpClientFor is the client of a step: the shared one, or, with a CA
// bundle, one that trusts only the bundle's CAs. The bundle is read from
// the API server on each attempt (the cache holds only the operator's own
// ConfigMaps), so a rotated bundle applies at the next attempt; clients are
// kept per bundle so that connections are reused.
func (r *FriendDeletionReconciler) httpClientFor(ctx context.Context, ns string, ref *snsv1alpha1.ConfigMapKeyRef) (*http.Client, error) {
	if ref == nil {
		return r.HTTP, nil
	}
	key := ref.Key
	if key == "" {
		key = "ca.crt"
	}
	cm := &corev1.ConfigMap{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("CA bundle ConfigMap %q not found", ref.Name)
		}
		return nil, fmt.Errorf("reading CA bundle ConfigMap %q: %w", ref.Name, err)
	}
	pem, ok := cm.Data[key]
	if !ok {
		return nil, fmt.Errorf("CA bundle ConfigMap %q has no key %q", ref.Name, key)
	}
	return r.httpFlights().clientFor(pem, r.HTTP)
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

// nextAttemptWait is the wait after a failed attempt: the backoff, or
// what the answer's Retry-After asked for when that is longer, at most
// HTTPRetryAfterMax.
func nextAttemptWait(attempt int32, retryAfter time.Duration, o Options, rnd float64) time.Duration {
	return max(httpBackoff(attempt, o, rnd), min(retryAfter, o.HTTPRetryAfterMax))
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

// newHTTPClient is the client of http steps. It follows no redirect: a
// 3xx is the answer, and fails the step (see httpAnswer).
func newHTTPClient(o Options) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = o.HTTPMaxIdleConnsPerHost
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// maxCAClients bounds the clients kept for CA bundles.
const maxCAClients = 64

// httpSends tracks the http attempts being sent, bounds them per config,
// and keeps the clients of CA bundles.
type httpSends struct {
	mu        sync.Mutex
	limit     int
	steps     map[string]time.Time // idempotency key -> request deadline
	perConfig map[string]int       // namespace/config -> requests in flight
	// waiting holds, per namespace/config, the FriendDeletions that found
	// no slot free, in the order they asked; queued is the same set.
	waiting map[string][]types.NamespacedName
	queued  map[types.NamespacedName]bool
	clients map[[32]byte]*http.Client
}

// httpFlights returns the reconciler's httpSends, made on first use.
func (r *FriendDeletionReconciler) httpFlights() *httpSends {
	r.sendsOnce.Do(func() {
		r.sends = &httpSends{
			limit:     max(r.Options.HTTPConcurrencyPerConfig, 1),
			steps:     map[string]time.Time{},
			perConfig: map[string]int{},
			waiting:   map[string][]types.NamespacedName{},
			queued:    map[types.NamespacedName]bool{},
			clients:   map[[32]byte]*http.Client{},
		}
	})
	return r.sends
}

// sending reports whether the step's attempt is in flight, and until when.
func (s *httpSends) sending(step string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.steps[step]
	return d, ok
}

// start takes a slot of the config for the step, or reports false when the
// step is still in flight or the config has no slot free; then who waits in
// line for one (see done).
func (s *httpSends) start(step, config string, deadline time.Time, who types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.steps[step]; busy {
		return false
	}
	if s.perConfig[config] >= s.limit {
		if !s.queued[who] {
			s.queued[who] = true
			s.waiting[config] = append(s.waiting[config], who)
		}
		return false
	}
	s.steps[step] = deadline
	s.perConfig[config]++
	return true
}

// done frees the slot start took, and returns the first FriendDeletion
// waiting for one of the config's slots, if any, now out of line.
func (s *httpSends) done(step, config string) (types.NamespacedName, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.steps, step)
	if s.perConfig[config]--; s.perConfig[config] <= 0 {
		delete(s.perConfig, config)
	}
	line := s.waiting[config]
	if len(line) == 0 {
		return types.NamespacedName{}, false
	}
	next := line[0]
	if len(line) == 1 {
		delete(s.waiting, config)
	} else {
		s.waiting[config] = line[1:]
	}
	delete(s.queued, next)
	return next, true
}

// freeSlot frees a send slot and wakes the FriendDeletion first in line
// for it.
func (r *FriendDeletionReconciler) freeSlot(step, config string) {
	if next, ok := r.httpFlights().done(step, config); ok {
		r.wakeUp(next.Namespace, next.Name)
	}
}

// clientFor returns a client like base that trusts only the CAs of the PEM
// bundle.
func (s *httpSends) clientFor(pem string, base *http.Client) (*http.Client, error) {
	sum := sha256.Sum256([]byte(pem))
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[sum]; ok {
		return c, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return nil, errors.New("CA bundle holds no PEM certificate")
	}
	bt, ok := base.Transport.(*http.Transport)
	if !ok {
		bt = http.DefaultTransport.(*http.Transport)
	}
	t := bt.Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if len(s.clients) >= maxCAClients {
		clear(s.clients) // bundles rotated many times; start over
	}
	c := &http.Client{Transport: t, CheckRedirect: base.CheckRedirect}
	s.clients[sum] = c
	return c, nil
}
