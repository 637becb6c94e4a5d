package install

import (
	"path/filepath"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// dist/install.yaml is committed so it can be applied straight from the
// repository; it must be what `make build-installer` renders today.
func TestBundleIsCurrent(t *testing.T) {
	want, err := run(t, tool(t, "kustomize"), "build", "config/default")
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	if got := string(readFile(t, bundleFile)); got != want {
		t.Errorf("%s differs from `kustomize build config/default`: run `make build-installer`", bundleFile)
	}
}

func TestBundleContents(t *testing.T) {
	objs := decode(t, string(readFile(t, bundleFile)))

	if objs.find("Namespace", bundleNS) == nil {
		t.Errorf("no Namespace %s", bundleNS)
	}
	for _, u := range objs {
		if u.GetNamespace() != "" && u.GetNamespace() != bundleNS {
			t.Errorf("%s %s is in namespace %q, want %s", u.GetKind(), u.GetName(), u.GetNamespace(), bundleNS)
		}
	}

	// The CRDs are the generated ones.
	bases, _ := filepath.Glob(filepath.Join(root, generatedCRDs, "*.yaml"))
	if got := len(objs.ofKind("CustomResourceDefinition")); got != len(bases) || got == 0 {
		t.Errorf("the bundle holds %d CRDs, %s %d", got, generatedCRDs, len(bases))
	}
	for _, b := range bases {
		base := decode(t, string(readFile(t, filepath.Join(generatedCRDs, filepath.Base(b)))))[0]
		crd := objs.find("CustomResourceDefinition", base.GetName())
		if crd == nil {
			t.Errorf("no CRD %s", base.GetName())
			continue
		}
		gotSpec, _, _ := unstructured.NestedMap(crd.Object, "spec")
		wantSpec, _, _ := unstructured.NestedMap(base.Object, "spec")
		if !reflect.DeepEqual(gotSpec, wantSpec) {
			t.Errorf("CRD %s in the bundle differs from %s", base.GetName(), b)
		}
	}

	d := get[appsv1.Deployment](t, objs, "Deployment", bundleDeploy)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	c := checkManagerPod(t, d)
	if !hasArg(c.Args, "--leader-elect") {
		t.Errorf("args %q lack --leader-elect", c.Args)
	}
	if want := "ghcr.io/imcallback/friend-deletion-operator:" + chartAppVersion(t); c.Image != want {
		t.Errorf("image = %s, want %s (the chart's appVersion; see config/manager/kustomization.yaml)", c.Image, want)
	}
	if d.Spec.Template.Spec.ServiceAccountName != bundleSA {
		t.Errorf("serviceAccountName = %q, want %q", d.Spec.Template.Spec.ServiceAccountName, bundleSA)
	}
	get[corev1.ServiceAccount](t, objs, "ServiceAccount", bundleSA)

	recv := get[corev1.Service](t, objs, "Service", "friend-deletion-operator-receiver")
	checkServiceReaches(t, recv, d, "receiver", 80)
	metrics := get[corev1.Service](t, objs, "Service", "friend-deletion-operator-controller-manager-metrics")
	checkServiceReaches(t, metrics, d, "metrics", 9090)

	role := get[rbacv1.ClusterRole](t, objs, "ClusterRole", "friend-deletion-operator-manager-role")
	if !reflect.DeepEqual(role.Rules, generatedRules(t)) {
		t.Errorf("the bundle's manager ClusterRole differs from %s", generatedRole)
	}
	crb := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "friend-deletion-operator-manager-rolebinding")
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", role.Name, bundleNS, bundleSA)

	le := get[rbacv1.Role](t, objs, "Role", "friend-deletion-operator-leader-election-role")
	if !grants(le.Rules, leaderElection, "leases", "create") || !grants(le.Rules, leaderElection, "leases", "update") {
		t.Errorf("leader-election Role does not grant creating and updating Leases: %+v", le.Rules)
	}
	rb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", "friend-deletion-operator-leader-election-rolebinding")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", le.Name, bundleNS, bundleSA)
}
