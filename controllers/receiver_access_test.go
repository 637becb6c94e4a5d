package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// receiverSA is the receiver's ServiceAccount in these tests; it need not
// exist for RBAC to name it.
var receiverSA = types.NamespacedName{Namespace: "ops", Name: "receiver"}

// authConfig is a CallbackConfig whose callbacks are signed with the token
// in the Secret named secret.
func authConfig(ns, name, secret string) *snsv1alpha1.CallbackConfig {
	cfg := newConfig(ns, name, externalStep("audit", 0))
	cfg.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: secret, Key: "token"}}
	return cfg
}

// receiverMayGet asks the API server's authorizer whether the receiver's
// ServiceAccount may get the Secret.
func receiverMayGet(g Gomega, ns, secret string) bool {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   fmt.Sprintf("system:serviceaccount:%s:%s", receiverSA.Namespace, receiverSA.Name),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + receiverSA.Namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Resource: "secrets", Name: secret, Verb: "get",
		},
	}}
	g.Expect(env.Client.Create(context.Background(), sar)).To(Succeed())
	return sar.Status.Allowed
}

// expectGrant checks the config's Role and RoleBinding: get on that one
// Secret, bound to the receiver, controlled by the config (so the garbage
// collector deletes them with it).
func expectGrant(g Gomega, cfg *snsv1alpha1.CallbackConfig, secret string) {
	key := types.NamespacedName{Namespace: cfg.Namespace, Name: receiverAccessName(cfg.Name)}
	role := &rbacv1.Role{}
	g.Expect(env.Client.Get(context.Background(), key, role)).To(Succeed())
	g.Expect(role.Rules).To(Equal([]rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret}, Verbs: []string{"get"},
	}}))
	binding := &rbacv1.RoleBinding{}
	g.Expect(env.Client.Get(context.Background(), key, binding)).To(Succeed())
	g.Expect(binding.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}))
	g.Expect(binding.Subjects).To(Equal([]rbacv1.Subject{{Kind: "ServiceAccount", Namespace: receiverSA.Namespace, Name: receiverSA.Name}}))
	for _, o := range []client.Object{role, binding} {
		g.Expect(metav1.IsControlledBy(o, cfg)).To(BeTrue(), "%T %s is controlled by the config", o, o.GetName())
		g.Expect(o.GetLabels()).To(HaveKeyWithValue(labelReceiverAccess, receiverAccessTokenSecret))
	}
}

// The controllers grant the receiver's ServiceAccount the token Secret a
// config names, and no other: a Role and RoleBinding created with the
// config, moved to the new Secret when the name changes, put back when
// someone deletes them, and deleted when spec.auth goes. Each is owned by
// the config, for the garbage collector (which envtest does not run) to
// delete with it.
func TestReceiverAccessFollowsTheConfig(t *testing.T) {
	g := gt(t)
	ns := env.Namespace(t)
	opts := testOptions()
	opts.ReceiverServiceAccount = receiverSA.String()
	startManager(t, ns, opts)

	cfg := authConfig(ns, "chat-app", "im-token")
	cfg.Spec.Verify = &snsv1alpha1.Verify{Endpoint: "https://im.example.com", Identifier: "administrator",
		SecretKeyRef: snsv1alpha1.SecretKeyRef{Name: "im-admin-key", Key: "key"}}
	create(t, cfg)
	g.Eventually(func(g Gomega) {
		expectGrant(g, cfg, "im-token")
		g.Expect(receiverMayGet(g, ns, "im-token")).To(BeTrue())
	}).Should(Succeed())
	// Nothing else: not the verify secret key, not any other Secret, not
	// the token's name in another namespace.
	g.Expect(receiverMayGet(g, ns, "im-admin-key")).To(BeFalse())
	g.Expect(receiverMayGet(g, ns, "")).To(BeFalse())
	g.Expect(receiverMayGet(g, "default", "im-token")).To(BeFalse())

	// The token moves to another Secret.
	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
	cfg.Spec.Auth.TokenSecretRef.Name = "im-token-2"
	g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	g.Eventually(func(g Gomega) {
		expectGrant(g, cfg, "im-token-2")
		g.Expect(receiverMayGet(g, ns, "im-token-2")).To(BeTrue())
		g.Expect(receiverMayGet(g, ns, "im-token")).To(BeFalse())
	}).Should(Succeed())

	// Someone deletes the binding: it is put back.
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: receiverAccessName(cfg.Name)}}
	g.Expect(env.Client.Delete(t.Context(), binding)).To(Succeed())
	g.Eventually(func(g Gomega) { expectGrant(g, cfg, "im-token-2") }).Should(Succeed())

	// Without spec.auth there is no token to read.
	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
	cfg.Spec.Auth = nil
	g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	g.Eventually(func(g Gomega) {
		for _, o := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: receiverAccessName(cfg.Name)}, o)
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%T: %v", o, err)
		}
		g.Expect(receiverMayGet(g, ns, "im-token-2")).To(BeFalse())
	}).Should(Succeed())
}

// A reconcile writes only what differs: the first creates the Role and
// the RoleBinding, a second with nothing changed writes nothing, a changed
// Secret name patches the Role alone. Reconcile is called directly, against
// the API server, with every write counted.
func TestReceiverAccessWritesOnlyChanges(t *testing.T) {
	g := gt(t)
	ns := env.Namespace(t)
	counter := &writeCounter{counts: map[string]int{}}
	c, err := client.New(counter.wrap(env.Config), client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	r := &ReceiverAccessReconciler{Client: c, ServiceAccount: receiverSA}
	cfg := authConfig(ns, strings.Repeat("c", 80), "im-token")
	create(t, cfg)
	reconcileOnce := func() {
		t.Helper()
		_, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)})
		g.Expect(err).NotTo(HaveOccurred())
	}

	reconcileOnce()
	g.Expect(counter.total()).To(Equal(2), "writes:\n%s", counter)
	g.Expect(counter.total("POST roles 201")).To(Equal(1))
	g.Expect(counter.total("POST rolebindings 201")).To(Equal(1))
	g.Expect(len(receiverAccessName(cfg.Name))).To(BeNumerically("<=", 63), "a long config's name is shortened")
	expectGrant(g, cfg, "im-token")

	reconcileOnce()
	reconcileOnce()
	g.Expect(counter.total()).To(Equal(2), "a reconcile that changes nothing writes nothing:\n%s", counter)

	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
	cfg.Spec.Auth.TokenSecretRef.Name = "im-token-2"
	g.Expect(env.Client.Update(t.Context(), cfg)).To(Succeed())
	reconcileOnce()
	g.Expect(counter.total()).To(Equal(3), "writes:\n%s", counter)
	g.Expect(counter.total("PATCH roles 200")).To(Equal(1))
	expectGrant(g, cfg, "im-token-2")
	reconcileOnce()
	g.Expect(counter.total()).To(Equal(3), "writes:\n%s", counter)
}

// A Role of that name that the config does not control is left alone, and
// the reconcile says why it grants nothing.
func TestReceiverAccessLeavesOthersRolesAlone(t *testing.T) {
	g := gt(t)
	ns := env.Namespace(t)
	cfg := authConfig(ns, "chat-app", "im-token")
	create(t, cfg)
	theirs := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: receiverAccessName(cfg.Name)},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}},
	}
	create(t, theirs)
	r := &ReceiverAccessReconciler{Client: env.Client, ServiceAccount: receiverSA}
	_, err := r.Reconcile(t.Context(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)})
	g.Expect(err).To(MatchError(ContainSubstring("is not this CallbackConfig's")))
	got := &rbacv1.Role{}
	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(theirs), got)).To(Succeed())
	g.Expect(got.Rules).To(Equal(theirs.Rules))
	err = env.Client.Get(t.Context(), client.ObjectKeyFromObject(theirs), &rbacv1.RoleBinding{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no binding to a Role the config does not control: %v", err)
}

func TestParseServiceAccount(t *testing.T) {
	for in, want := range map[string]string{
		"ops/receiver":                    "",
		"fdo-system/fdo-receiver":         "",
		"receiver":                        "want <namespace>/<name>",
		"ops/":                            "not a ServiceAccount name",
		"/receiver":                       "not a namespace name",
		"ops/a/b":                         "want <namespace>/<name>",
		"Ops/receiver":                    "not a namespace name",
		"ops/" + strings.Repeat("r", 254): "not a ServiceAccount name",
	} {
		t.Run(in, func(t *testing.T) {
			sa, err := ParseServiceAccount(in)
			if want == "" {
				if err != nil || sa.String() != in {
					t.Fatalf("ParseServiceAccount(%q) = %v, %v", in, sa, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("ParseServiceAccount(%q) error = %v, want one saying %q", in, err, want)
			}
		})
	}
}
