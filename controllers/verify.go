package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/internal/imrest"
)

// This file verifies a FriendDeletion's pairs with the IM backend before
// its first cleanup step (issue 14): v4/sns/friend_check tells, per pair,
// whether the friendship is really gone. Only pairs with no relation left
// go to the steps (stepPairs); the others are skipped, or fail the
// deletion when the config's verify.stillFriends is Fail.

// startVerification records, on a FriendDeletion's first sight, that its
// pairs are to be verified before any step: status.verification with
// every relation unknown. Whether a deletion is verified is fixed then,
// like its steps.
func startVerification(fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig) {
	if cfg == nil || cfg.Spec.Verify == nil {
		return
	}
	n := len(fd.Spec.Pairs)
	fd.Status.Verification = &snsv1alpha1.Verification{
		Relations: strings.Repeat(string(rune(snsv1alpha1.RelationUnknown)), n),
		Verified:  fmt.Sprintf("0/%d", n),
	}
}

// reconcileVerification asks the IM backend about the pairs not yet
// answered, and reports whether the steps may go on (done). It does
// nothing for a FriendDeletion that is not verified or already is.
//
// Sets the Verified condition: False with Verifying, Retrying (a REST
// failure, an ErrorCode, a pair's ResultCode; retried with backoff),
// VerifyAuthFailed (the UserSig was refused; waits for the secret key's
// Secret or the config to change), SecretNotFound or SecretKeyMissing
// (waits for the Secret), or
// StillFriends (the deletion fails); True with Verified, PairsSkipped or
// NothingToClean (the deletion succeeds without a step).
func (r *FriendDeletionReconciler) reconcileVerification(ctx context.Context, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig) (ctrl.Result, bool, error) {
	v := fd.Status.Verification
	if v == nil || v.CompletionTime != nil {
		return ctrl.Result{}, true, nil
	}
	now := r.now()
	if cfg == nil || cfg.Spec.Verify == nil {
		// Without a config the steps fail (ConfigNotFound); without
		// spec.verify, the config no longer asks for verification.
		if cfg == nil {
			r.imClients().forget(types.NamespacedName{Namespace: fd.Namespace, Name: fd.Spec.ConfigName})
		}
		fd.Status.Verification = nil
		msg := fmt.Sprintf("CallbackConfig %q no longer verifies pairs; all %d pairs go to the cleanup steps.", fd.Spec.ConfigName, len(fd.Spec.Pairs))
		if cfg == nil {
			msg = fmt.Sprintf("CallbackConfig %q does not exist; the pairs were not verified.", fd.Spec.ConfigName)
		}
		r.setVerified(fd, metav1.ConditionFalse, snsv1alpha1.ReasonVerifyRemoved, msg, now)
		return ctrl.Result{}, true, nil
	}
	if len(v.Relations) != len(fd.Spec.Pairs) {
		// The spec is immutable, so only a hand-edited status gets here:
		// ask about every pair again.
		startVerification(fd, cfg)
		v = fd.Status.Verification
	}
	spec := cfg.Spec.Verify
	secret, key, reason, err := r.verifyKey(ctx, fd.Namespace, spec.SecretKeyRef)
	if err != nil {
		return ctrl.Result{}, false, err
	}
	if reason != "" {
		// The Secret's creation or change wakes us (unverifiedOfSecret);
		// the slow requeue is a safety net.
		msg := fmt.Sprintf("Secret %q with the app's secret key does not exist.", spec.SecretKeyRef.Name)
		if reason == snsv1alpha1.ReasonSecretKeyMissing {
			msg = fmt.Sprintf("Secret %q has no key %q (the app's secret key).", spec.SecretKeyRef.Name, spec.SecretKeyRef.Key)
		}
		r.setVerified(fd, metav1.ConditionFalse, reason, msg+" Verification waits for it.", now)
		return ctrl.Result{RequeueAfter: r.Options.VerifyBackoffMax}, false, nil
	}
	credentials := fmt.Sprintf("%s/%d", secret.ResourceVersion, cfg.Generation)
	if v.RefusedCredentials != "" {
		if v.RefusedCredentials == credentials {
			// Refused with this key and config; a change of either wakes us.
			return ctrl.Result{}, false, nil
		}
		v.RefusedCredentials = ""
	}
	if v.NextAttemptTime != nil && now.Before(v.NextAttemptTime) {
		return ctrl.Result{RequeueAfter: v.NextAttemptTime.Sub(now.Time)}, false, nil
	}
	cl, err := r.imClients().get(fd.Namespace, cfg, r.Options)
	if err != nil {
		return ctrl.Result{}, false, err
	}
	cl.SetKey(key, secret.ResourceVersion)

	relations := []byte(v.Relations)
	calls, err := imrest.Verify(ctx, cl, fd.Spec.Pairs, relations)
	countRelations(v, relations)
	r.countVerify(fd, calls, err)
	var limited *imrest.RateLimitedError
	switch {
	case err == nil:
		v.NextAttemptTime, v.CompletionTime = nil, &now
		r.verificationDone(fd, spec, now)
		return ctrl.Result{}, true, nil
	case errors.As(err, &limited):
		// Our turn comes later: no failure, no write of its own.
		r.setVerified(fd, metav1.ConditionFalse, snsv1alpha1.ReasonVerifying, verifyingMessage(v), now)
		return ctrl.Result{RequeueAfter: limited.After}, false, nil
	case ctx.Err() != nil:
		return ctrl.Result{}, false, err
	case imrest.IsAuth(err):
		v.RefusedCredentials = credentials
		v.NextAttemptTime = nil
		r.setVerified(fd, metav1.ConditionFalse, snsv1alpha1.ReasonVerifyAuthFailed,
			fmt.Sprintf("%v. No request is sent until Secret %q or the CallbackConfig's verify changes.", err, spec.SecretKeyRef.Name), now)
		return ctrl.Result{}, false, nil
	}
	return r.verifyRetry(fd, v, snsv1alpha1.ReasonRetrying, err.Error(), now)
}

// countVerify adds a verification attempt to the metrics: its calls that
// were answered, the one that failed, and the pairs once all are answered.
func (r *FriendDeletionReconciler) countVerify(fd *snsv1alpha1.FriendDeletion, answered int, err error) {
	m := r.VerifyMetrics
	if m == nil {
		return
	}
	ns, cfg := fd.Namespace, fd.Spec.ConfigName
	m.calls.WithLabelValues(ns, cfg, verifyCallOK).Add(float64(answered))
	var limited *imrest.RateLimitedError
	switch {
	case err == nil:
		v := fd.Status.Verification
		m.pairs.WithLabelValues(ns, cfg, verifyPairsGone).Add(float64(v.Cleared))
		m.pairs.WithLabelValues(ns, cfg, verifyPairsFriends).Add(float64(v.Skipped))
	case errors.As(err, &limited), imrest.IsItemsFailed(err), errors.Is(err, context.Canceled):
		// No failed call: not sent, or answered with failed items.
	case imrest.IsAuth(err):
		m.calls.WithLabelValues(ns, cfg, verifyCallAuth).Inc()
	default:
		m.calls.WithLabelValues(ns, cfg, verifyCallError).Inc()
	}
}

// verifyRetry records a failed verification attempt and when the next is.
func (r *FriendDeletionReconciler) verifyRetry(fd *snsv1alpha1.FriendDeletion, v *snsv1alpha1.Verification, reason, cause string, now metav1.Time) (ctrl.Result, bool, error) {
	v.Attempts++
	wait := verifyBackoff(r.Options, v.Attempts)
	next := metav1.NewTime(now.Add(wait))
	v.NextAttemptTime = &next
	r.setVerified(fd, metav1.ConditionFalse, reason,
		fmt.Sprintf("Attempt %d failed: %s. %s; next attempt at %s.", v.Attempts, cause, verifyingMessage(v), next.UTC().Format(time.RFC3339)), now)
	return ctrl.Result{RequeueAfter: wait}, false, nil
}

// verifyBackoff is the wait after the attempts-th failed verification:
// VerifyBackoffBase doubled per earlier failure, at most VerifyBackoffMax.
func verifyBackoff(o Options, attempts int32) time.Duration {
	wait := o.VerifyBackoffBase
	for i := int32(1); i < attempts && wait < o.VerifyBackoffMax; i++ {
		wait *= 2
	}
	return min(wait, o.VerifyBackoffMax)
}

// verificationDone sets the Verified condition once every pair has an
// answer.
func (r *FriendDeletionReconciler) verificationDone(fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.Verify, now metav1.Time) {
	v := fd.Status.Verification
	n := len(fd.Spec.Pairs)
	switch {
	case v.Skipped > 0 && spec.StillFriends == snsv1alpha1.StillFriendsFail:
		r.setVerified(fd, metav1.ConditionFalse, snsv1alpha1.ReasonStillFriends,
			fmt.Sprintf("%d of %d pairs are still friendships (%s) and verify.stillFriends is Fail; no cleanup step runs.", v.Skipped, n, skippedExample(fd)), now)
	case v.Cleared == 0:
		r.setVerified(fd, metav1.ConditionTrue, snsv1alpha1.ReasonNothingToClean,
			fmt.Sprintf("All %d pairs are still friendships (%s); no cleanup step runs.", n, skippedExample(fd)), now)
	case v.Skipped > 0:
		r.setVerified(fd, metav1.ConditionTrue, snsv1alpha1.ReasonPairsSkipped,
			fmt.Sprintf("%d of %d pairs are still friendships (%s) and are left out of the cleanup steps; %d go on.", v.Skipped, n, skippedExample(fd), v.Cleared), now)
	default:
		r.setVerified(fd, metav1.ConditionTrue, snsv1alpha1.ReasonVerified,
			fmt.Sprintf("The IM backend confirmed all %d friendships gone.", n), now)
	}
}

// skippedExample names the first skipped pair, for the message.
func skippedExample(fd *snsv1alpha1.FriendDeletion) string {
	v := fd.Status.Verification
	for i, p := range fd.Spec.Pairs {
		if c := v.Relations[i]; c != snsv1alpha1.RelationNone && c != snsv1alpha1.RelationUnknown {
			return fmt.Sprintf("first: %s and %s, relation %c", p.From, p.To, c)
		}
	}
	return "none"
}

// countRelations writes relations and their counts into v.
func countRelations(v *snsv1alpha1.Verification, relations []byte) {
	v.Relations = string(relations)
	v.Cleared, v.Skipped = 0, 0
	for _, c := range relations {
		switch c {
		case snsv1alpha1.RelationUnknown:
		case snsv1alpha1.RelationNone:
			v.Cleared++
		default:
			v.Skipped++
		}
	}
	v.Verified = fmt.Sprintf("%d/%d", v.Cleared, len(relations))
}

func verifyingMessage(v *snsv1alpha1.Verification) string {
	return fmt.Sprintf("%d of %d pairs answered", v.Cleared+v.Skipped, len(v.Relations))
}

func (r *FriendDeletionReconciler) setVerified(fd *snsv1alpha1.FriendDeletion, status metav1.ConditionStatus, reason, msg string, now metav1.Time) {
	meta.SetStatusCondition(&fd.Status.Conditions, metav1.Condition{
		Type: snsv1alpha1.ConditionVerified, Status: status, Reason: reason,
		Message: msg, ObservedGeneration: fd.Generation, LastTransitionTime: now,
	})
}

// verificationEnded reports whether verification decided the deletion's
// outcome, so that no step runs: NothingToClean or StillFriends.
func verificationEnded(fd *snsv1alpha1.FriendDeletion) bool {
	c := meta.FindStatusCondition(fd.Status.Conditions, snsv1alpha1.ConditionVerified)
	return c != nil && (c.Reason == snsv1alpha1.ReasonNothingToClean || c.Reason == snsv1alpha1.ReasonStillFriends)
}

// verifyKey reads the app's secret key from the API server (Secrets are
// not cached). A missing Secret or key is a reason, not an error.
func (r *FriendDeletionReconciler) verifyKey(ctx context.Context, ns string, ref snsv1alpha1.SecretKeyRef) (*corev1.Secret, []byte, string, error) {
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, snsv1alpha1.ReasonSecretNotFound, nil
		}
		return nil, nil, "", fmt.Errorf("reading Secret %q: %w", ref.Name, err)
	}
	key := s.Data[ref.Key]
	if len(key) == 0 {
		return s, nil, snsv1alpha1.ReasonSecretKeyMissing, nil
	}
	return s, key, "", nil
}

// imClientSet keeps one IM REST client per CallbackConfig, so that its rate
// limiter and UserSig serve all the config's FriendDeletions; a changed
// verify spec makes a new one.
type imClientSet struct {
	mu      sync.Mutex
	http    *http.Client
	clients map[types.NamespacedName]*imClientEntry
}

type imClientEntry struct {
	spec   snsv1alpha1.Verify
	appID  string
	client *imrest.Client
}

func (r *FriendDeletionReconciler) imClients() *imClientSet {
	r.imOnce.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		r.im = &imClientSet{
			http: &http.Client{
				Transport: t, Timeout: r.Options.VerifyTimeout,
				// A redirect is an answer other than 200, so a failed
				// attempt; following it would send the request elsewhere.
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			},
			clients: map[types.NamespacedName]*imClientEntry{},
		}
	})
	return r.im
}

func (s *imClientSet) get(ns string, cfg *snsv1alpha1.CallbackConfig, o Options) (*imrest.Client, error) {
	key := types.NamespacedName{Namespace: ns, Name: cfg.Name}
	spec := *cfg.Spec.Verify
	spec.SecretKeyRef = snsv1alpha1.SecretKeyRef{} // the key is set per call
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.clients[key]; e != nil && e.spec == spec && e.appID == cfg.Spec.SDKAppID {
		return e.client, nil
	}
	appID, err := imrest.ParseSDKAppID(cfg.Spec.SDKAppID)
	if err != nil {
		return nil, err
	}
	rps := float64(spec.RequestsPerSecond)
	if rps <= 0 {
		rps = 20
	}
	c := imrest.New(imrest.Config{
		Endpoint: spec.Endpoint, SDKAppID: appID, Identifier: spec.Identifier,
		HTTP: s.http, RequestsPerSecond: rps, MaxWait: o.VerifyMaxWait,
	})
	s.clients[key] = &imClientEntry{spec: spec, appID: cfg.Spec.SDKAppID, client: c}
	return c, nil
}

// forget drops the client of a config that is gone.
func (s *imClientSet) forget(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, key)
}

// unverifiedOfSecret maps a Secret to the FriendDeletions waiting for
// verification by a config whose secret key it holds: a new key may be the
// one the IM backend accepts.
func (r *FriendDeletionReconciler) unverifiedOfSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var configs snsv1alpha1.CallbackConfigList
	if err := r.List(ctx, &configs, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexVerifySecret: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing CallbackConfigs of a Secret", "secret", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for _, c := range configs.Items {
		var list snsv1alpha1.FriendDeletionList
		if err := r.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingFields{indexConfigName: c.Name}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing FriendDeletions of a CallbackConfig", "config", c.Name)
			return nil
		}
		for _, fd := range list.Items {
			if v := fd.Status.Verification; v != nil && v.CompletionTime == nil && !fd.Status.Phase.Finished() {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&fd)})
			}
		}
	}
	return reqs
}

// verificationUnwritten reports whether this reconcile holds verification
// answers the API server does not have yet. A reconcile that would
// otherwise defer its status write (to combine it with a later one) writes
// them at once: they decide what the steps see.
func verificationUnwritten(p *statusPatcher, fd *snsv1alpha1.FriendDeletion) bool {
	return !equality.Semantic.DeepEqual(p.base.Status.Verification, fd.Status.Verification)
}
