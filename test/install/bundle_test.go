package install

import (
	"path/filepath"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
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

	ctrls := get[appsv1.Deployment](t, objs, "Deployment", bundleDeploy)
	recvD := get[appsv1.Deployment](t, objs, "Deployment", bundleReceiverDeploy)
	all := []*appsv1.Deployment{ctrls, recvD}
	for role, d := range map[string]*appsv1.Deployment{"controllers": ctrls, "receiver": recvD} {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("%s replicas = %v, want 2", role, d.Spec.Replicas)
		}
		c := checkManagerPod(t, d, role)
		checkResources(t, c, role)
		if want := "ghcr.io/imcallback/friend-deletion-operator:" + chartAppVersion(t); c.Image != want {
			t.Errorf("%s image = %s, want %s (the chart's appVersion; see config/manager/kustomization.yaml)", role, c.Image, want)
		}
		if role == "controllers" && !hasArg(c.Args, "--leader-elect") {
			t.Errorf("args %q lack --leader-elect", c.Args)
		}
		// The controllers grant the receiver's ServiceAccount the token
		// Secrets the configs name.
		if sa := "--receiver-service-account=" + bundleNS + "/" + bundleReceiverSA; role == "controllers" && !hasArg(c.Args, sa) {
			t.Errorf("args %q lack %s", c.Args, sa)
		}
		if role == "receiver" {
			checkSpool(t, d.Spec.Template.Spec, c, nil)
		}
		pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", d.Name)
		if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
			t.Errorf("%s PodDisruptionBudget maxUnavailable = %v, want 1", role, pdb.Spec.MaxUnavailable)
		}
		checkSelects(t, "PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector, all, d)
	}
	if ctrls.Spec.Template.Spec.ServiceAccountName != bundleSA || recvD.Spec.Template.Spec.ServiceAccountName != bundleReceiverSA {
		t.Errorf("serviceAccountNames = %q and %q, want %q and %q", ctrls.Spec.Template.Spec.ServiceAccountName,
			recvD.Spec.Template.Spec.ServiceAccountName, bundleSA, bundleReceiverSA)
	}
	get[corev1.ServiceAccount](t, objs, "ServiceAccount", bundleSA)
	get[corev1.ServiceAccount](t, objs, "ServiceAccount", bundleReceiverSA)

	recv := get[corev1.Service](t, objs, "Service", "friend-deletion-operator-receiver")
	checkServiceReaches(t, recv, all, []*appsv1.Deployment{recvD}, "receiver", 80)
	metrics := get[corev1.Service](t, objs, "Service", "friend-deletion-operator-controller-manager-metrics")
	checkServiceReaches(t, metrics, all, all, "metrics", 8443)

	// Each identity is bound to exactly its generated role, and nothing
	// else in the bundle grants it anything.
	for _, b := range []struct{ role, binding, file, sa string }{
		{"friend-deletion-operator-manager-role", "friend-deletion-operator-manager-rolebinding", generatedRole, bundleSA},
		{"friend-deletion-operator-receiver-role", "friend-deletion-operator-receiver-rolebinding", generatedReceiverRole, bundleReceiverSA},
	} {
		role := get[rbacv1.ClusterRole](t, objs, "ClusterRole", b.role)
		if !reflect.DeepEqual(role.Rules, generatedRulesOf(t, b.file)) {
			t.Errorf("the bundle's ClusterRole %s differs from %s", b.role, b.file)
		}
		crb := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", b.binding)
		checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", role.Name, bundleNS, b.sa)
	}
	auth := get[rbacv1.ClusterRole](t, objs, "ClusterRole", "friend-deletion-operator-metrics-auth-role")
	if !reflect.DeepEqual(auth.Rules, generatedRulesOf(t, generatedMetricsAuthRole)) {
		t.Errorf("the bundle's metrics-auth ClusterRole differs from %s", generatedMetricsAuthRole)
	}
	authB := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "friend-deletion-operator-metrics-auth-rolebinding")
	checkBindingSubjects(t, authB.RoleRef, authB.Subjects, "ClusterRole", auth.Name, bundleNS, bundleSA, bundleReceiverSA)
	reader := get[rbacv1.ClusterRole](t, objs, "ClusterRole", "friend-deletion-operator-metrics-reader")
	if want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}; !reflect.DeepEqual(reader.Rules, want) {
		t.Errorf("metrics-reader rules = %+v, want %+v", reader.Rules, want)
	}

	le := get[rbacv1.Role](t, objs, "Role", "friend-deletion-operator-leader-election-role")
	if !reflect.DeepEqual(le.Rules, leaderElectionRules) {
		t.Errorf("leader-election Role rules = %+v, want exactly %+v", le.Rules, leaderElectionRules)
	}
	rb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", "friend-deletion-operator-leader-election-rolebinding")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", le.Name, bundleNS, bundleSA)

	checkBindingsOnly(t, objs, bundleNS, map[string][]string{
		bundleSA: {"ClusterRole/friend-deletion-operator-manager-role", "ClusterRole/friend-deletion-operator-metrics-auth-role",
			"Role/friend-deletion-operator-leader-election-role@" + bundleNS},
		bundleReceiverSA: {"ClusterRole/friend-deletion-operator-receiver-role", "ClusterRole/friend-deletion-operator-metrics-auth-role"},
	})
}
