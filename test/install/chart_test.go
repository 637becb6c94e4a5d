package install

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names the chart gives a release "fdo".
const (
	release     = "fdo-friend-deletion-operator"
	receiverSvc = release + "-receiver"
	metricsSvc  = release + "-metrics"
	managerRole = release + "-manager"
)

func TestHelmLint(t *testing.T) {
	helm := tool(t, "helm")
	for name, args := range map[string][]string{
		"default values":    nil,
		"every option used": {"--values", everything},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := run(t, helm, append([]string{"lint", "--strict", chartDir}, args...)...)
			if err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint reported failures:\n%s", out)
			}
		})
	}
}

func TestChartDefaults(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops"))

	d := get[appsv1.Deployment](t, objs, "Deployment", release)
	if d.Namespace != "ops" {
		t.Errorf("Deployment namespace = %q, want the release namespace ops", d.Namespace)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	c := checkManagerPod(t, d)
	if c.Image != "ghcr.io/imcallback/friend-deletion-operator:"+chartAppVersion(t) {
		t.Errorf("image = %s, want the chart's appVersion %s", c.Image, chartAppVersion(t))
	}
	for _, arg := range []string{"--leader-elect=true", "--leader-election-namespace=ops", "--zap-log-level=info"} {
		if !hasArg(c.Args, arg) {
			t.Errorf("args %q lack %s", c.Args, arg)
		}
	}
	if strings.Contains(strings.Join(c.Args, " "), "--receiver-cert-dir") {
		t.Errorf("the receiver serves TLS by default: %q", c.Args)
	}
	if d.Spec.Template.Spec.ServiceAccountName != release {
		t.Errorf("serviceAccountName = %q, want %q", d.Spec.Template.Spec.ServiceAccountName, release)
	}
	get[corev1.ServiceAccount](t, objs, "ServiceAccount", release)

	recv := get[corev1.Service](t, objs, "Service", receiverSvc)
	if recv.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("receiver Service type = %s, want ClusterIP", recv.Spec.Type)
	}
	checkServiceReaches(t, recv, d, "receiver", 80)
	checkServiceReaches(t, get[corev1.Service](t, objs, "Service", metricsSvc), d, "metrics", 9090)

	pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", release)
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("PodDisruptionBudget selector %v does not match the pods (%v)", pdb.Spec.Selector, err)
	}

	for _, kind := range []string{"Ingress", "Certificate", "ServiceMonitor", "NetworkPolicy"} {
		if got := objs.ofKind(kind); len(got) != 0 {
			t.Errorf("a %s is rendered though it is off by default", kind)
		}
	}

	checkChartRBAC(t, objs, "ops", release)
	for _, name := range []string{"callbackconfigs-edit", "callbackconfigs-view", "frienddeletions-edit", "frienddeletions-view"} {
		if objs.find("ClusterRole", release+"-"+name) == nil {
			t.Errorf("no aggregated ClusterRole %s-%s", release, name)
		}
	}
}

// checkChartRBAC checks that the manager's ServiceAccount is bound to a
// ClusterRole with exactly the generated rules, and to a leader-election
// Role in the release namespace.
func checkChartRBAC(t *testing.T, objs manifests, ns, sa string) {
	t.Helper()
	role := get[rbacv1.ClusterRole](t, objs, "ClusterRole", managerRole)
	if !reflect.DeepEqual(role.Rules, generatedRules(t)) {
		t.Errorf("the chart's ClusterRole rules differ from %s (run `make chart-rbac`):\nchart: %+v\ngenerated: %+v", generatedRole, role.Rules, generatedRules(t))
	}
	crb := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", managerRole)
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", managerRole, ns, sa)

	le := get[rbacv1.Role](t, objs, "Role", release+"-leader-election")
	if le.Namespace != ns {
		t.Errorf("leader-election Role is in %q, want %q", le.Namespace, ns)
	}
	if !grants(le.Rules, leaderElection, "leases", "create") || !grants(le.Rules, leaderElection, "leases", "update") {
		t.Errorf("leader-election Role does not grant creating and updating Leases: %+v", le.Rules)
	}
	rb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", release+"-leader-election")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", le.Name, ns, sa)
}

func checkBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name, ns, sa string) {
	t.Helper()
	if ref.Kind != kind || ref.Name != name {
		t.Errorf("binding refers to %s %s, want %s %s", ref.Kind, ref.Name, kind, name)
	}
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}
	if !reflect.DeepEqual(subjects, want) {
		t.Errorf("binding subjects = %+v, want %+v", subjects, want)
	}
}

// grants reports whether rules allow verb on group/resource.
func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if contains(r.APIGroups, group) && contains(r.Resources, resource) && (contains(r.Verbs, verb) || contains(r.Verbs, "*")) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestChartEveryOption(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--values", everything))

	d := get[appsv1.Deployment](t, objs, "Deployment", release)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", d.Spec.Replicas)
	}
	c := checkManagerPod(t, d)
	if c.Image != "registry.example.com/im/friend-deletion-operator:v9.9.9" {
		t.Errorf("image = %s", c.Image)
	}
	for _, arg := range []string{"--leader-elect=true", "--zap-log-level=debug", "--receiver-cert-dir=/etc/receiver-tls", "--receiver-trust-forwarded-for", "--enable-example-reconciler"} {
		if !hasArg(c.Args, arg) {
			t.Errorf("args %q lack %s", c.Args, arg)
		}
	}
	if want := resource.MustParse("512Mi"); !c.Resources.Limits.Memory().Equal(want) {
		t.Errorf("memory limit = %s, want %s", c.Resources.Limits.Memory(), &want)
	}
	if d.Spec.Template.Labels["team"] != "im" || d.Spec.Template.Spec.PriorityClassName != "system-cluster-critical" ||
		len(d.Spec.Template.Spec.Tolerations) != 1 || len(d.Spec.Template.Spec.ImagePullSecrets) != 1 {
		t.Errorf("pod labels, priority class, tolerations or pull secrets not applied: %+v", d.Spec.Template)
	}

	// TLS: cert-manager writes the Secret the pod mounts.
	cert := objs.find("Certificate", receiverSvc)
	if cert == nil {
		t.Fatalf("no cert-manager Certificate %s", receiverSvc)
	}
	secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	if got := tlsSecretOf(d); got == "" || got != secret {
		t.Errorf("the pod mounts TLS Secret %q, the Certificate writes %q", got, secret)
	}
	if issuer, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name"); issuer != "letsencrypt" {
		t.Errorf("Certificate issuer = %q, want letsencrypt", issuer)
	}

	recv := get[corev1.Service](t, objs, "Service", receiverSvc)
	if recv.Spec.Type != corev1.ServiceTypeLoadBalancer || recv.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("receiver Service type %s, externalTrafficPolicy %s; want LoadBalancer, Local", recv.Spec.Type, recv.Spec.ExternalTrafficPolicy)
	}
	checkServiceReaches(t, recv, d, "receiver", 8443)
	if recv.Spec.Ports[0].Name != "https" {
		t.Errorf("receiver Service port is named %q, want https with TLS on", recv.Spec.Ports[0].Name)
	}

	ing := get[networkingv1.Ingress](t, objs, "Ingress", receiverSvc)
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
		t.Errorf("ingressClassName = %v, want nginx", ing.Spec.IngressClassName)
	}
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "im-callbacks.example.com" {
		t.Fatalf("Ingress rules = %+v, want one for im-callbacks.example.com", ing.Spec.Rules)
	}
	paths := ing.Spec.Rules[0].HTTP.Paths
	if len(paths) != 1 || paths[0].Path != "/callbacks" || paths[0].Backend.Service == nil ||
		paths[0].Backend.Service.Name != receiverSvc || paths[0].Backend.Service.Port.Number != 8443 {
		t.Errorf("Ingress should route /callbacks to %s:8443, routes %+v", receiverSvc, paths)
	}
	if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "im-callbacks-ingress-tls" {
		t.Errorf("Ingress TLS = %+v", ing.Spec.TLS)
	}

	sm := objs.find("ServiceMonitor", release)
	if sm == nil {
		t.Fatalf("no ServiceMonitor %s", release)
	}
	if sm.GetLabels()["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels = %v, want release: prometheus", sm.GetLabels())
	}
	smSel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	metrics := get[corev1.Service](t, objs, "Service", metricsSvc)
	if len(smSel) == 0 || !labels.SelectorFromSet(smSel).Matches(labels.Set(metrics.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service (labels %v)", smSel, metrics.Labels)
	}
	if objs.find("Service", receiverSvc) != nil && labels.SelectorFromSet(smSel).Matches(labels.Set(recv.Labels)) {
		t.Errorf("ServiceMonitor selector %v also selects the receiver Service", smSel)
	}

	np := get[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", release)
	npSel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || !npSel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy does not select the manager's pods")
	}
	ports := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			ports[p.Port.String()] = true
		}
	}
	if !ports["receiver"] || !ports["metrics"] || len(ports) != 2 {
		t.Errorf("NetworkPolicy should admit the receiver and metrics ports only, admits %v", ports)
	}

	pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", release)
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(2) {
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 2", pdb.Spec.MaxUnavailable)
	}
}

func TestChartReceiverTLSFromSecret(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "receiver.tls.enabled=true", "--set", "receiver.tls.secretName=receiver-cert"))
	d := get[appsv1.Deployment](t, objs, "Deployment", release)
	if got := tlsSecretOf(d); got != "receiver-cert" {
		t.Errorf("the pod mounts TLS Secret %q, want receiver-cert", got)
	}
	if objs.find("Certificate", receiverSvc) != nil {
		t.Errorf("a Certificate is rendered though the Secret is given")
	}
	checkServiceReaches(t, get[corev1.Service](t, objs, "Service", receiverSvc), d, "receiver", 443)
}

func TestChartSingleReplicaWithoutLeaderElection(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "replicaCount=1", "--set", "leaderElection.enabled=false"))
	c := checkManagerPod(t, get[appsv1.Deployment](t, objs, "Deployment", release))
	if !hasArg(c.Args, "--leader-elect=false") {
		t.Errorf("args %q lack --leader-elect=false", c.Args)
	}
	if len(objs.ofKind("Role")) != 0 || len(objs.ofKind("RoleBinding")) != 0 {
		t.Errorf("leader-election RBAC is rendered without leader election")
	}
}

func TestChartRefusesBrokenValues(t *testing.T) {
	for name, tc := range map[string]struct {
		set  []string
		want string
	}{
		"replicas without leader election": {[]string{"leaderElection.enabled=false"}, "needs leaderElection.enabled"},
		"TLS without a certificate source": {[]string{"receiver.tls.enabled=true"}, "receiver.tls.secretName"},
		"cert-manager without an issuer":   {[]string{"receiver.tls.enabled=true", "receiver.tls.certManager.enabled=true"}, "issuerRef.name"},
		"cert-manager without TLS":         {[]string{"receiver.tls.certManager.enabled=true"}, "needs receiver.tls.enabled"},
		"Ingress without a host":           {[]string{"ingress.enabled=true"}, "ingress.hosts"},
		"misspelt value":                   {[]string{"reciever.tls.enabled=true"}, "reciever"},
		"unknown Service type":             {[]string{"receiver.service.type=ExternalName"}, "receiver/service/type"},
	} {
		t.Run(name, func(t *testing.T) {
			var args []string
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, err := helmTemplate(t, "ops", args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template --set %v: error %v, want one mentioning %q", tc.set, err, tc.want)
			}
		})
	}
}

// The chart's copies of generated files must be current: Helm installs the
// CRDs from crds/ and renders the ClusterRole from files/manager-role.yaml.
func TestChartCopiesAreCurrent(t *testing.T) {
	bases, err := filepath.Glob(filepath.Join(root, generatedCRDs, "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in %s: %v", generatedCRDs, err)
	}
	copies, _ := filepath.Glob(filepath.Join(root, chartDir, "crds", "*.yaml"))
	if len(copies) != len(bases) {
		t.Errorf("%s/crds holds %d files, %s %d: run `make chart-crds`", chartDir, len(copies), generatedCRDs, len(bases))
	}
	pairs := map[string]string{generatedRole: filepath.Join(chartDir, "files", "manager-role.yaml")}
	for _, b := range bases {
		pairs[filepath.Join(generatedCRDs, filepath.Base(b))] = filepath.Join(chartDir, "crds", filepath.Base(b))
	}
	for src, dst := range pairs {
		got, err := os.ReadFile(filepath.Join(root, dst))
		if err != nil || string(got) != string(readFile(t, src)) {
			t.Errorf("%s is not a copy of %s: run `make chart-crds chart-rbac`", dst, src)
		}
	}
}

// chartAppVersion is the chart's appVersion, the release's image tag.
func chartAppVersion(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(string(readFile(t, filepath.Join(chartDir, "Chart.yaml"))), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}

// tlsSecretOf returns the Secret mounted at the receiver's certificate
// folder, or "".
func tlsSecretOf(d *appsv1.Deployment) string {
	c := d.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if m.MountPath != "/etc/receiver-tls" {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return v.Secret.SecretName
			}
		}
	}
	return ""
}
