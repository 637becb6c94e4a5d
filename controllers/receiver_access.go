package controllers

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// The receiver's access to token Secrets. The internet-facing receiver
// holds no right on Secrets of its own: for each CallbackConfig with
// spec.auth, the controllers keep a Role in the config's namespace that
// grants get on the one Secret auth.tokenSecretRef names
// (resourceNames), and a RoleBinding of it to the receiver's
// ServiceAccount (--receiver-service-account). Both are owned by the config
// (a controller reference, so the garbage collector deletes them with it),
// follow a change of the Secret's name, and are deleted when spec.auth
// goes. The API server's escalation prevention lets the controllers write
// them without the bind or escalate verbs because the controllers
// themselves may get Secrets in that namespace; the RBAC rights below are
// bounded by that: they cannot grant what the controllers do not hold.
//
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=list;watch;create;patch;delete

const (
	// labelReceiverAccess marks the Roles and RoleBindings that grant the
	// receiver a config's token Secret; the manager caches only those.
	labelReceiverAccess = "sns.imcallback.io/receiver-access"
	// receiverAccessTokenSecret is labelReceiverAccess's value: what the
	// Role grants.
	receiverAccessTokenSecret = "token-secret"
)

// receiverAccessName is the name of a config's Role and RoleBinding.
func receiverAccessName(config string) string { return childName(config, "receiver-token") }

// ParseServiceAccount reads --receiver-service-account, "<namespace>/<name>".
func ParseServiceAccount(s string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("%q: want <namespace>/<name>", s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return types.NamespacedName{}, fmt.Errorf("%q: the namespace %q is not a namespace name: %s", s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return types.NamespacedName{}, fmt.Errorf("%q: the name %q is not a ServiceAccount name: %s", s, name, strings.Join(errs, "; "))
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// receiverAccessCache narrows the manager's cache of Roles and RoleBindings
// to the ones this file writes. Part of CacheByObject.
func receiverAccessCache() map[client.Object]cache.ByObject {
	sel := labels.SelectorFromSet(labels.Set{labelReceiverAccess: receiverAccessTokenSecret})
	return map[client.Object]cache.ByObject{
		&rbacv1.Role{}:        {Label: sel},
		&rbacv1.RoleBinding{}: {Label: sel},
	}
}

// ReceiverAccessReconciler keeps, for each CallbackConfig, the Role and
// RoleBinding that let the receiver's ServiceAccount get the config's
// token Secret and nothing else. It writes only what differs from what it
// wants: a config reconciled again with nothing changed costs no write.
type ReceiverAccessReconciler struct {
	client.Client
	// ServiceAccount is the receiver's.
	ServiceAccount types.NamespacedName
}

// setupReceiverAccess adds the ReceiverAccessReconciler to mgr. It is
// woken by a config's spec changing and by any change to the Roles and
// RoleBindings it controls (someone edited or deleted one).
func setupReceiverAccess(mgr ctrl.Manager, sa types.NamespacedName, opts Options) error {
	r := &ReceiverAccessReconciler{Client: mgr.GetClient(), ServiceAccount: sa}
	return ctrl.NewControllerManagedBy(mgr).
		Named("receiveraccess").
		For(&snsv1alpha1.CallbackConfig{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&rbacv1.Role{}, builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Owns(&rbacv1.RoleBinding{}, builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.CallbackConfigConcurrency,
			RateLimiter:             opts.rateLimiter(),
		}).
		Complete(r)
}

// Reconcile makes the config's Role and RoleBinding what
// desiredReceiverAccess says: created, patched or deleted. A deleted config
// needs nothing: the garbage collector deletes what it owned.
func (r *ReceiverAccessReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cfg := &snsv1alpha1.CallbackConfig{}
	if err := r.Get(ctx, req.NamespacedName, cfg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cfg.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	role, binding := desiredReceiverAccess(cfg, r.ServiceAccount)
	// The Role before its binding, which the API server allows only once
	// the Role exists; the binding before the Role when both go.
	if role != nil {
		if err := r.syncRole(ctx, cfg, role); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.syncBinding(ctx, cfg, binding)
	}
	if err := r.deleteOwned(ctx, cfg, &rbacv1.RoleBinding{}); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.deleteOwned(ctx, cfg, &rbacv1.Role{})
}

// desiredReceiverAccess is the Role and RoleBinding the config should
// have, or nil and nil without spec.auth.
func desiredReceiverAccess(cfg *snsv1alpha1.CallbackConfig, sa types.NamespacedName) (*rbacv1.Role, *rbacv1.RoleBinding) {
	if cfg.Spec.Auth == nil {
		return nil, nil
	}
	meta := metav1.ObjectMeta{
		Namespace: cfg.Namespace,
		Name:      receiverAccessName(cfg.Name),
		Labels:    map[string]string{labelReceiverAccess: receiverAccessTokenSecret},
		// A controller reference without blockOwnerDeletion, which would
		// need update on the config's finalizers where
		// OwnerReferencesPermissionEnforcement runs.
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: snsv1alpha1.GroupVersion.String(), Kind: "CallbackConfig",
			Name: cfg.Name, UID: cfg.UID, Controller: ptr.To(true),
		}},
	}
	role := &rbacv1.Role{
		ObjectMeta: *meta.DeepCopy(),
		Rules: []rbacv1.PolicyRule{{
			APIGroups:     []string{""},
			Resources:     []string{"secrets"},
			ResourceNames: []string{cfg.Spec.Auth.TokenSecretRef.Name},
			Verbs:         []string{"get"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: sa.Namespace, Name: sa.Name}},
	}
	return role, binding
}

// syncRole creates the Role, or patches the one the config controls when
// its rules, labels or owner differ.
func (r *ReceiverAccessReconciler) syncRole(ctx context.Context, cfg *snsv1alpha1.CallbackConfig, want *rbacv1.Role) error {
	have := &rbacv1.Role{}
	found, err := r.getOwned(ctx, cfg, client.ObjectKeyFromObject(want), have)
	if err != nil || !found {
		return r.create(ctx, want, err)
	}
	if equality.Semantic.DeepEqual(have.Rules, want.Rules) && sameMeta(&have.ObjectMeta, &want.ObjectMeta) {
		return nil
	}
	patch := client.MergeFrom(have.DeepCopy())
	have.Rules, have.OwnerReferences = want.Rules, want.OwnerReferences
	mergeLabels(&have.ObjectMeta, want.Labels)
	if err := r.Patch(ctx, have, patch); err != nil {
		return fmt.Errorf("patching Role %s: %w", have.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("receiver may read the config's token Secret", "role", have.Name, "secret", want.Rules[0].ResourceNames[0])
	return nil
}

// syncBinding creates the RoleBinding, or patches the one the config
// controls when its subjects, labels or owner differ. One whose roleRef,
// which cannot change, is not the Role is deleted, to be created again.
func (r *ReceiverAccessReconciler) syncBinding(ctx context.Context, cfg *snsv1alpha1.CallbackConfig, want *rbacv1.RoleBinding) error {
	have := &rbacv1.RoleBinding{}
	found, err := r.getOwned(ctx, cfg, client.ObjectKeyFromObject(want), have)
	if err != nil || !found {
		return r.create(ctx, want, err)
	}
	if have.RoleRef != want.RoleRef {
		if err := r.Delete(ctx, have, client.Preconditions{UID: &have.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting RoleBinding %s bound to another role: %w", have.Name, err)
		}
		return fmt.Errorf("RoleBinding %s was bound to %s %s: deleted, to be created again", have.Name, have.RoleRef.Kind, have.RoleRef.Name)
	}
	if equality.Semantic.DeepEqual(have.Subjects, want.Subjects) && sameMeta(&have.ObjectMeta, &want.ObjectMeta) {
		return nil
	}
	patch := client.MergeFrom(have.DeepCopy())
	have.Subjects, have.OwnerReferences = want.Subjects, want.OwnerReferences
	mergeLabels(&have.ObjectMeta, want.Labels)
	if err := r.Patch(ctx, have, patch); err != nil {
		return fmt.Errorf("patching RoleBinding %s: %w", have.Name, err)
	}
	return nil
}

// getOwned reads the object from the cache. It reports false when there
// is none; an object the config does not control is an error, left alone.
func (r *ReceiverAccessReconciler) getOwned(ctx context.Context, cfg *snsv1alpha1.CallbackConfig, key client.ObjectKey, obj client.Object) (bool, error) {
	if err := r.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if !metav1.IsControlledBy(obj, cfg) {
		return false, fmt.Errorf("%T %s exists and is not this CallbackConfig's: the receiver is not granted its token Secret until it is deleted", obj, key.Name)
	}
	return true, nil
}

// create creates obj unless err (from getOwned) says not to. An object of
// that name that the cache does not see (one without the label, made by
// someone else) is an error, left alone.
func (r *ReceiverAccessReconciler) create(ctx context.Context, obj client.Object, err error) error {
	if err != nil {
		return err
	}
	if err := r.Create(ctx, obj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%T %s exists and is not this CallbackConfig's: the receiver is not granted its token Secret until it is deleted: %w", obj, obj.GetName(), err)
		}
		return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
	}
	if role, ok := obj.(*rbacv1.Role); ok {
		ctrl.LoggerFrom(ctx).Info("receiver may read the config's token Secret", "role", role.Name, "secret", role.Rules[0].ResourceNames[0])
	}
	return nil
}

// deleteOwned deletes the config's Role or RoleBinding, if it has one.
func (r *ReceiverAccessReconciler) deleteOwned(ctx context.Context, cfg *snsv1alpha1.CallbackConfig, obj client.Object) error {
	found, err := r.getOwned(ctx, cfg, client.ObjectKey{Namespace: cfg.Namespace, Name: receiverAccessName(cfg.Name)}, obj)
	if err != nil || !found {
		return err
	}
	uid := obj.GetUID()
	if err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

// sameMeta reports whether have carries want's labels and owner
// references (other labels and annotations are left as they are).
func sameMeta(have, want *metav1.ObjectMeta) bool {
	for k, v := range want.Labels {
		if have.Labels[k] != v {
			return false
		}
	}
	return equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences)
}

// mergeLabels sets labels on m, keeping its others.
func mergeLabels(m *metav1.ObjectMeta, labels map[string]string) {
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	for k, v := range labels {
		m.Labels[k] = v
	}
}
