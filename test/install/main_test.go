// Package install tests what a user installs: the kubectl bundle
// dist/install.yaml, the Helm chart in charts/friend-deletion-operator and the
// image's build context. Rendered manifests are applied to a real
// kube-apiserver.
//
// helm and kustomize are built into bin/ by `make helm kustomize`, which
// `make test` runs first; without them the tests that need them skip.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

var env *testenv.Env

// TestMain starts a control plane with OwnerReferencesPermissionEnforcement
// on, as OpenShift and other hardened clusters run it: there, an owner
// reference that blocks its owner's deletion (as a controller reference
// does) needs permission to update the owner's finalizers, so the installed
// role must grant it for the operator's Jobs and ConfigMaps to be created.
//
// The API server also writes an audit log (auditLog) of every request at
// Metadata level, from which the least-privilege test reads what each
// ServiceAccount asked for and whether it was allowed.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "install-audit-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	auditLog = filepath.Join(dir, "audit.log")
	code := func() int {
		e, err := testenv.Start(
			testenv.WithAdmissionPlugins("OwnerReferencesPermissionEnforcement"),
			testenv.WithAuditLog(auditLog, []byte(auditPolicy)),
		)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
			return 1
		}
		env = e
		defer func() {
			if err := env.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
			}
		}()
		return m.Run()
	}()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// auditLog is the API server's audit log.
var auditLog string

// auditPolicy records who asked for what and the answer (Metadata level,
// once the response is complete or, for a watch, started) of every request
// but the control plane's health checks. It cannot single out the
// operator's ServiceAccounts: the tests run the manager as the administrator
// impersonating them, and the policy sees the administrator; the test picks
// them out by the impersonated user.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: Metadata
`

// root is the repository's top folder.
var root = testenv.RepoRoot()

const (
	chartDir     = "charts/friend-deletion-operator"
	bundleFile   = "dist/install.yaml"
	everything   = "test/install/testdata/values-everything.yaml"
	bundleNS     = "friend-deletion-operator-system"
	bundleSA     = "friend-deletion-operator-controller-manager"
	bundleDeploy = "friend-deletion-operator-controller-manager"
	// The receiver's own Deployment and identity.
	bundleReceiverSA     = "friend-deletion-operator-receiver"
	bundleReceiverDeploy = "friend-deletion-operator-receiver"
	// The generated roles: the controllers', the receiver's, and the one
	// both need to authenticate metrics scrapers.
	generatedRole            = "config/rbac/role.yaml"
	generatedReceiverRole    = "config/rbac/receiver_role.yaml"
	generatedMetricsAuthRole = "config/rbac/metrics_auth_role.yaml"
	generatedCRDs            = "config/crd/bases"
	leaderElection           = "coordination.k8s.io"
)

// tool returns bin/<name>, skipping the test when it has not been built.
func tool(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(root, "bin", name)
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s is not built: run `make %s` (make test does)", bin, name)
	}
	return bin
}

// run runs a command in the repository's top folder and returns its
// standard output; a failure carries standard error.
func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return stdout.String(), nil
}

// helmTemplate renders the chart as release "fdo" in namespace ns with the
// given extra helm arguments (--values, --set).
func helmTemplate(t *testing.T, ns string, args ...string) (string, error) {
	t.Helper()
	return run(t, tool(t, "helm"), append([]string{"template", "fdo", chartDir, "--namespace", ns}, args...)...)
}

// mustHelmTemplate is helmTemplate that fails the test on an error.
func mustHelmTemplate(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := helmTemplate(t, ns, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	return out
}

// readFile reads a file relative to the repository's top folder.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// manifests is a decoded multi-document YAML stream.
type manifests []*unstructured.Unstructured

// decode splits a multi-document YAML stream into objects, dropping empty
// documents.
func decode(t *testing.T, stream string) manifests {
	t.Helper()
	var objs manifests
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding manifests: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, &u)
		}
	}
}

// find returns the object of that kind and name, or nil.
func (m manifests) find(kind, name string) *unstructured.Unstructured {
	for _, u := range m {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

// ofKind returns every object of that kind.
func (m manifests) ofKind(kind string) manifests {
	var out manifests
	for _, u := range m {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// get finds an object and converts it to a typed one, failing the test when
// it is missing.
func get[T any](t *testing.T, m manifests, kind, name string) *T {
	t.Helper()
	u := m.find(kind, name)
	if u == nil {
		t.Fatalf("no %s %q among the rendered objects", kind, name)
	}
	obj := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		t.Fatalf("converting %s %q: %v", kind, name, err)
	}
	return obj
}

// generatedRulesOf are the rules controller-gen generated into file from
// the kubebuilder RBAC markers.
func generatedRulesOf(t *testing.T, file string) []rbacv1.PolicyRule {
	t.Helper()
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(readFile(t, file), &role); err != nil {
		t.Fatalf("reading %s: %v", file, err)
	}
	if len(role.Rules) == 0 {
		t.Fatalf("%s has no rules", file)
	}
	return role.Rules
}

// leaderElectionRules are what the controllers' leader election uses, and
// all the leader-election Role may grant: client-go's LeaseLock gets,
// creates and updates its Lease, and the leader's Event is a core Event,
// created once per process (its message names the process's own identity,
// so the recorder never sees it repeated and never patches it).
// The RBAC markers cannot say this (they make cluster-wide rules), so the
// Role is written by hand and held to these rules here.
var leaderElectionRules = []rbacv1.PolicyRule{
	{APIGroups: []string{leaderElection}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
}

// containerPort returns the port number of the named container port.
func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// hasArg reports whether args holds arg.
func hasArg(args []string, arg string) bool {
	for _, a := range args {
		if a == arg {
			return true
		}
	}
	return false
}
