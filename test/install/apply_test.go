package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// applyDryRun sends every object of a manifest file to the API server with
// a server-side dry-run apply, as `kubectl apply --server-side --dry-run=server`
// does, and checks that the server accepted each one.
func applyDryRun(t *testing.T, file string) {
	t.Helper()
	out, err := env.Kubectl(t, "apply", "--server-side", "--dry-run=server", "--field-manager=install-test", "-f", file)
	if err != nil {
		t.Fatalf("kubectl apply --server-side --dry-run=server -f %s: %v\n%s", file, err, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, string(raw))
	if got := strings.Count(out, "serverside-applied (server dry run)"); got != len(objs) {
		t.Errorf("the API server accepted %d of %d objects:\n%s", got, len(objs), out)
	}
}

// apply applies a manifest file for real with `kubectl apply -f`, the
// documented install.
func apply(t *testing.T, file string) {
	t.Helper()
	out, err := env.Kubectl(t, "apply", "-f", file)
	if err != nil {
		t.Fatalf("kubectl apply -f %s: %v\n%s", file, err, out)
	}
}

// createNamespace creates a namespace that may already exist.
func createNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(t.Context(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// writeTemp writes a rendered manifest stream to a file for kubectl.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBundleServerSideDryRun(t *testing.T) {
	// The CRDs are installed by the test environment; a dry run cannot
	// create the namespace its objects go in, so it is made first.
	createNamespace(t, bundleNS)
	applyDryRun(t, filepath.Join(root, bundleFile))
}

func TestChartServerSideDryRun(t *testing.T) {
	// Stand-ins for the Prometheus operator's and cert-manager's CRDs, which
	// the chart's optional objects need.
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join("testdata", "crds")},
		ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("installing stand-in CRDs: %v", err)
	}
	for name, args := range map[string][]string{
		"default values":    nil,
		"every option used": {"--values", everything},
	} {
		t.Run(name, func(t *testing.T) {
			ns := env.Namespace(t)
			// The namespaces values-everything.yaml watches, where its
			// Roles go.
			createNamespace(t, "im-prod")
			createNamespace(t, "im-staging")
			rendered := mustHelmTemplate(t, ns, append([]string{"--include-crds"}, args...)...)
			applyDryRun(t, writeTemp(t, "chart.yaml", rendered))
		})
	}
}

// attributesOf lists every request rules allow, in namespace ns ("" for
// cluster-wide). A rule naming resources gives its first name.
func attributesOf(rules []rbacv1.PolicyRule, ns string) []authorizationv1.ResourceAttributes {
	var out []authorizationv1.ResourceAttributes
	for _, r := range rules {
		for _, group := range r.APIGroups {
			for _, res := range r.Resources {
				resource, sub, _ := strings.Cut(res, "/")
				for _, verb := range r.Verbs {
					attrs := authorizationv1.ResourceAttributes{Namespace: ns, Group: group, Resource: resource, Subresource: sub, Verb: verb}
					if len(r.ResourceNames) > 0 {
						attrs.Name = r.ResourceNames[0]
					}
					out = append(out, attrs)
				}
			}
		}
	}
	return out
}

// ruleGrants reports whether rules allow attrs, namespace aside.
func ruleGrants(rules []rbacv1.PolicyRule, attrs authorizationv1.ResourceAttributes) bool {
	res := attrs.Resource
	if attrs.Subresource != "" {
		res += "/" + attrs.Subresource
	}
	for _, r := range rules {
		if contains(r.APIGroups, attrs.Group) && contains(r.Resources, res) && contains(r.Verbs, attrs.Verb) {
			return true
		}
	}
	return false
}

// beyond are requests tried against each role that its generated rules do
// not list: reading Secrets in bulk (the controllers' rules list it, the
// receiver's do not), changing Secrets, running pods, minting tokens and
// changing RBAC.
var beyond = []authorizationv1.ResourceAttributes{
	{Resource: "secrets", Verb: "list"},
	{Resource: "secrets", Verb: "watch"},
	{Resource: "secrets", Verb: "update"},
	{Resource: "pods", Verb: "create"},
	{Resource: "serviceaccounts", Subresource: "token", Verb: "create"},
	{Group: "batch", Resource: "jobs", Verb: "delete"},
	{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "create"},
	{Group: "sns.imcallback.io", Resource: "callbackconfigs", Verb: "update"},
	{Group: "sns.imcallback.io", Resource: "frienddeletions", Verb: "update"},
}

// identity is one installed ServiceAccount and what it must and must not be
// allowed.
type identity struct {
	ns, sa string
	// own are its generated rules, granted in each of namespaces, or
	// cluster-wide when namespaces is empty.
	own        []rbacv1.PolicyRule
	namespaces []string
	// leases: it holds the leader-election Lease in its own namespace.
	leases bool
	// others are rules of other roles; what they grant and own does not
	// must be refused.
	others [][]rbacv1.PolicyRule
}

// checkIdentity asks the API server's authorizer, both ways, whether an
// installed ServiceAccount may do exactly what its generated role says: every
// request the role allows is allowed (where it should be), and every request
// of the other roles it lacks, the beyond list, and its own requests outside
// its namespaces, are refused.
func checkIdentity(t *testing.T, id identity) {
	t.Helper()
	auth := generatedRulesOf(t, generatedMetricsAuthRole)
	want := attributesOf(auth, "")
	scopes := id.namespaces
	if len(scopes) == 0 {
		scopes = []string{""}
	}
	for _, ns := range scopes {
		want = append(want, attributesOf(id.own, ns)...)
	}
	if id.leases {
		for _, verb := range []string{"get", "create", "update"} {
			want = append(want, authorizationv1.ResourceAttributes{Namespace: id.ns, Group: leaderElection, Resource: "leases", Verb: verb})
		}
		want = append(want, authorizationv1.ResourceAttributes{Namespace: id.ns, Group: "", Resource: "events", Verb: "create"})
	}
	waitForBindings(t, id.ns, id.sa, want)
	for _, attrs := range want {
		if !allowed(t, id.ns, id.sa, attrs) {
			t.Errorf("%s/%s may not %s %s/%s (namespace %q)", id.ns, id.sa, attrs.Verb, attrs.Group, attrs.Resource, attrs.Namespace)
		}
	}

	var refuse []authorizationv1.ResourceAttributes
	for _, scope := range scopes {
		candidates := append([]authorizationv1.ResourceAttributes{}, beyond...)
		for _, rules := range id.others {
			candidates = append(candidates, attributesOf(rules, "")...)
		}
		for _, attrs := range candidates {
			if !ruleGrants(id.own, attrs) && !ruleGrants(auth, attrs) {
				attrs.Namespace = scope
				refuse = append(refuse, attrs)
			}
		}
	}
	if len(id.namespaces) > 0 {
		// Watching a list of namespaces grants nothing outside it.
		refuse = append(refuse, attributesOf(id.own, "default")...)
		refuse = append(refuse, attributesOf(id.own, "")...)
	}
	if !id.leases {
		refuse = append(refuse, authorizationv1.ResourceAttributes{Namespace: id.ns, Group: leaderElection, Resource: "leases", Verb: "update"})
	}
	// Leader election needs Leases in the controllers' own namespace only,
	// and there only get, create and update.
	refuse = append(refuse,
		authorizationv1.ResourceAttributes{Namespace: "default", Group: leaderElection, Resource: "leases", Verb: "update"},
		authorizationv1.ResourceAttributes{Namespace: id.ns, Group: leaderElection, Resource: "leases", Verb: "delete"},
		authorizationv1.ResourceAttributes{Namespace: id.ns, Group: leaderElection, Resource: "leases", Verb: "list"})
	for _, attrs := range refuse {
		if allowed(t, id.ns, id.sa, attrs) {
			t.Errorf("%s/%s may %s %s/%s/%s (namespace %q), which its role does not say", id.ns, id.sa, attrs.Verb, attrs.Group, attrs.Resource, attrs.Subresource, attrs.Namespace)
		}
	}
}

// Each installed identity may do what its generated role says and nothing
// beyond: the controllers what controllers/ marks (and their Lease), the
// internet-facing receiver what webhook/ marks, which is no Jobs, no Secret
// lists and no Leases.
//
// The receiver's role grants no Secret at all: the controllers grant it each
// token Secret a CallbackConfig names, at run time (see
// receiverReadsOnlyTokenSecrets), so an installed receiver is refused every
// Secret here (the controllers' "get secrets" is among what it must be
// refused).
func TestServiceAccountPermissions(t *testing.T) {
	ctrlsRules, recvRules := generatedRulesOf(t, generatedRole), generatedRulesOf(t, generatedReceiverRole)
	for _, r := range recvRules {
		if contains(r.Resources, "secrets") {
			t.Errorf("%s grants Secrets (%v): the controllers grant the receiver the token Secrets configs name, and no other", generatedReceiverRole, r.Verbs)
		}
	}
	check := func(t *testing.T, ns, ctrlsSA, recvSA string, namespaces []string) {
		t.Run("controllers", func(t *testing.T) {
			checkIdentity(t, identity{ns: ns, sa: ctrlsSA, own: ctrlsRules, namespaces: namespaces, leases: true,
				others: [][]rbacv1.PolicyRule{recvRules}})
		})
		t.Run("receiver", func(t *testing.T) {
			checkIdentity(t, identity{ns: ns, sa: recvSA, own: recvRules, namespaces: namespaces,
				others: [][]rbacv1.PolicyRule{ctrlsRules}})
		})
	}

	t.Run("kubectl bundle", func(t *testing.T) {
		apply(t, filepath.Join(root, bundleFile))
		check(t, bundleNS, bundleSA, bundleReceiverSA, nil)
	})
	t.Run("Helm chart", func(t *testing.T) {
		ns := env.Namespace(t)
		apply(t, writeTemp(t, "chart.yaml", mustHelmTemplate(t, ns)))
		check(t, ns, release+"-controllers", release+"-receiver", nil)
	})
	t.Run("Helm chart watching two namespaces", func(t *testing.T) {
		ns, a, b := env.Namespace(t), env.Namespace(t), env.Namespace(t)
		apply(t, writeTemp(t, "chart.yaml", mustHelmTemplate(t, ns, "--set", "watchNamespaces={"+a+","+b+"}")))
		check(t, ns, release+"-controllers", release+"-receiver", []string{a, b})
	})
}

// allowed asks the API server's authorizer whether the ServiceAccount may
// do what attrs describe.
func allowed(t *testing.T, ns, sa string, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa),
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	if err := env.Client.Create(t.Context(), sar); err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return sar.Status.Allowed
}

// waitForBindings waits until the authorizer, which learns of new bindings
// through a watch, allows any of the requests, so that the checks after it
// see the bindings just applied.
func waitForBindings(t *testing.T, ns, sa string, requests []authorizationv1.ResourceAttributes) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, attrs := range requests {
			if allowed(t, ns, sa, attrs) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s/%s was granted none of %d requests: its bindings are missing or broken", ns, sa, len(requests))
	}
}
