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
			rendered := mustHelmTemplate(t, ns, append([]string{"--include-crds"}, args...)...)
			applyDryRun(t, writeTemp(t, "chart.yaml", rendered))
		})
	}
}

// The manager's ServiceAccount, once installed, may do what the generated
// ClusterRole says anywhere, and hold its leader-election Lease in its own
// namespace only.
func TestServiceAccountPermissions(t *testing.T) {
	check := func(t *testing.T, ns, sa string) {
		var want []authorizationv1.ResourceAttributes
		for _, r := range generatedRules(t) {
			for _, group := range r.APIGroups {
				for _, res := range r.Resources {
					resource, sub, _ := strings.Cut(res, "/")
					for _, verb := range r.Verbs {
						attrs := authorizationv1.ResourceAttributes{Group: group, Resource: resource, Subresource: sub, Verb: verb}
						if len(r.ResourceNames) > 0 {
							attrs.Name = r.ResourceNames[0]
						}
						want = append(want, attrs)
					}
				}
			}
		}
		for _, verb := range []string{"get", "create", "update"} {
			want = append(want, authorizationv1.ResourceAttributes{Namespace: ns, Group: leaderElection, Resource: "leases", Verb: verb})
		}
		want = append(want, authorizationv1.ResourceAttributes{Namespace: ns, Group: "", Resource: "events", Verb: "create"})

		waitForBindings(t, ns, sa, want)
		for _, attrs := range want {
			if !allowed(t, ns, sa, attrs) {
				t.Errorf("%s/%s may not %s %s/%s (namespace %q)", ns, sa, attrs.Verb, attrs.Group, attrs.Resource, attrs.Namespace)
			}
		}
		// Least privilege: leader election needs Leases in its own namespace only.
		if allowed(t, ns, sa, authorizationv1.ResourceAttributes{Namespace: "default", Group: leaderElection, Resource: "leases", Verb: "update"}) {
			t.Errorf("%s/%s may update Leases in namespace default; leader election needs them in %s only", ns, sa, ns)
		}
	}

	t.Run("kubectl bundle", func(t *testing.T) {
		apply(t, filepath.Join(root, bundleFile))
		check(t, bundleNS, bundleSA)
	})
	t.Run("Helm chart", func(t *testing.T) {
		ns := env.Namespace(t)
		apply(t, writeTemp(t, "chart.yaml", mustHelmTemplate(t, ns)))
		check(t, ns, release)
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
