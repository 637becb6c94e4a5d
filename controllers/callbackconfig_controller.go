package controllers

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// maxTokenLength is the longest callback token the IM console accepts.
const maxTokenLength = 128

// CallbackConfigReconciler keeps a CallbackConfig's Ready condition and
// webhookPath. It shares the status with the callback receiver, which
// writes the callback counters and lastCallbackTime; this reconciler
// patches only conditions, observedGeneration and webhookPath, as a merge
// patch of just those fields, so neither overwrites the other.
type CallbackConfigReconciler struct {
	client.Client
	// APIReader reads Secrets from the API server: Secrets are watched by
	// metadata only and never cached whole.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Options   Options
}

// Reconcile computes webhookPath and the Ready condition from the token
// Secret and spec.suspend, and VerifyReady from spec.verify's secret key
// Secret, and patches them.
func (r *CallbackConfigReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	cfg := &snsv1alpha1.CallbackConfig{}
	if err := r.Get(ctx, req.NamespacedName, cfg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cfg.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	base := cfg.DeepCopy()
	defer func() {
		if err := r.patchStatus(ctx, base, cfg); err != nil {
			retErr = fmt.Errorf("patching status: %w", err)
		}
	}()

	cfg.Status.WebhookPath = WebhookPath(cfg.Namespace, cfg.Name)
	secret, err := r.tokenSecret(ctx, cfg)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := metav1.NewTime(r.Options.Clock.Now())
	meta.SetStatusCondition(&cfg.Status.Conditions, configReadyCondition(cfg, secret, now))
	if cfg.Spec.Verify == nil {
		meta.RemoveStatusCondition(&cfg.Status.Conditions, snsv1alpha1.ConditionVerifyReady)
	} else {
		key, err := r.verifyKeySecret(ctx, cfg)
		if err != nil {
			return ctrl.Result{}, err
		}
		meta.SetStatusCondition(&cfg.Status.Conditions, verifyReadyCondition(cfg, key, now))
	}
	cfg.Status.ObservedGeneration = cfg.Generation
	return ctrl.Result{}, nil
}

// verifyKeySecret reads the secret key Secret of spec.verify, or returns
// nil when it does not exist.
func (r *CallbackConfigReconciler) verifyKeySecret(ctx context.Context, cfg *snsv1alpha1.CallbackConfig) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	name := cfg.Spec.Verify.SecretKeyRef.Name
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cfg.Namespace, Name: name}, s)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading secret key Secret %q: %w", name, err)
	}
	return s, nil
}

// verifyReadyCondition is a verifying CallbackConfig's VerifyReady
// condition: whether its secret key Secret (nil: missing) holds the key.
// Deletions wait for it; it does not stop callbacks being accepted.
func verifyReadyCondition(cfg *snsv1alpha1.CallbackConfig, secret *corev1.Secret, now metav1.Time) metav1.Condition {
	ref := cfg.Spec.Verify.SecretKeyRef
	c := metav1.Condition{
		Type: snsv1alpha1.ConditionVerifyReady, Status: metav1.ConditionFalse,
		ObservedGeneration: cfg.Generation, LastTransitionTime: now,
	}
	switch {
	case secret == nil:
		c.Reason = snsv1alpha1.ReasonSecretNotFound
		c.Message = fmt.Sprintf("Secret %q does not exist in namespace %s; create it with the app's secret key under key %q. FriendDeletions wait for it before their steps.", ref.Name, cfg.Namespace, ref.Key)
	case len(secret.Data[ref.Key]) == 0:
		c.Reason = snsv1alpha1.ReasonSecretKeyMissing
		c.Message = fmt.Sprintf("Secret %q has no key %q; add the app's secret key under that key. FriendDeletions wait for it before their steps.", ref.Name, ref.Key)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, snsv1alpha1.ReasonSecretKeyFound
		c.Message = fmt.Sprintf("Verifying pairs with %s as %s before any cleanup step.", cfg.Spec.Verify.Endpoint, cfg.Spec.Verify.Identifier)
	}
	return c
}

// WebhookPath is the receiver path of a CallbackConfig.
func WebhookPath(namespace, name string) string {
	return "/callbacks/" + namespace + "/" + name
}

// tokenSecret reads the token Secret, or returns nil when the config has no
// auth or the Secret does not exist.
func (r *CallbackConfigReconciler) tokenSecret(ctx context.Context, cfg *snsv1alpha1.CallbackConfig) (*corev1.Secret, error) {
	if cfg.Spec.Auth == nil {
		return nil, nil
	}
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.Spec.Auth.TokenSecretRef.Name}, s)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading token Secret %q: %w", cfg.Spec.Auth.TokenSecretRef.Name, err)
	}
	return s, nil
}

// patchStatus writes only the fields this reconciler owns, and emits an
// Event when Ready changes.
func (r *CallbackConfigReconciler) patchStatus(ctx context.Context, base, cfg *snsv1alpha1.CallbackConfig) error {
	// Start from the status as read and change only our fields, so the
	// merge patch carries nothing the receiver owns.
	want := base.DeepCopy()
	want.Status.Conditions = cfg.Status.Conditions
	want.Status.ObservedGeneration = cfg.Status.ObservedGeneration
	want.Status.WebhookPath = cfg.Status.WebhookPath
	patch := client.MergeFrom(base)
	data, err := patch.Data(want)
	if err != nil {
		return err
	}
	if string(data) == "{}" {
		return nil
	}
	if err := r.Status().Patch(ctx, want, patch); err != nil {
		return err
	}
	old := meta.FindStatusCondition(base.Status.Conditions, snsv1alpha1.ConditionReady)
	now := meta.FindStatusCondition(cfg.Status.Conditions, snsv1alpha1.ConditionReady)
	if r.Recorder != nil && now != nil && (old == nil || old.Reason != now.Reason) {
		r.Recorder.Eventf(cfg, nil, eventType(now.Reason), now.Reason, "Configure", "%s", now.Message)
	}
	return nil
}

// configReadyCondition is a CallbackConfig's Ready condition: False with a
// reason the user can act on when the token Secret (if auth is on) is
// missing, lacks the key or holds an unusable token; False with Suspended
// when spec.suspend is set; True otherwise. secret is nil when it does not
// exist.
func configReadyCondition(cfg *snsv1alpha1.CallbackConfig, secret *corev1.Secret, now metav1.Time) metav1.Condition {
	c := metav1.Condition{
		Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		ObservedGeneration: cfg.Generation, LastTransitionTime: now,
	}
	if auth := cfg.Spec.Auth; auth != nil {
		ref := auth.TokenSecretRef
		if secret == nil {
			c.Reason = snsv1alpha1.ReasonSecretNotFound
			c.Message = fmt.Sprintf("Secret %q does not exist in namespace %s; create it with the callback token under key %q.", ref.Name, cfg.Namespace, ref.Key)
			return c
		}
		token, ok := secret.Data[ref.Key]
		if !ok {
			c.Reason = snsv1alpha1.ReasonSecretKeyMissing
			c.Message = fmt.Sprintf("Secret %q has no key %q; add the callback token under that key.", ref.Name, ref.Key)
			return c
		}
		if n := len(strings.TrimSpace(string(token))); n == 0 || n > maxTokenLength {
			c.Reason = snsv1alpha1.ReasonInvalidToken
			c.Message = fmt.Sprintf("Key %q of Secret %q holds a token of %d characters; the IM console takes 1 to %d.", ref.Key, ref.Name, n, maxTokenLength)
			return c
		}
	}
	if cfg.Spec.Suspend {
		c.Reason = snsv1alpha1.ReasonSuspended
		c.Message = "spec.suspend is set: callbacks are answered FAIL and nothing is created."
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, snsv1alpha1.ReasonConfigured
	c.Message = fmt.Sprintf("Accepting callbacks for SDKAppID %s at %s.", cfg.Spec.SDKAppID, WebhookPath(cfg.Namespace, cfg.Name))
	if cfg.Spec.Auth == nil {
		c.Message += " Callback authentication is off."
	}
	return c
}
