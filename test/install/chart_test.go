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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Names the chart gives a release "fdo".
const (
	release     = "fdo-friend-deletion-operator"
	receiverSvc = release + "-receiver"
	metricsSvc  = release + "-metrics"
	// Each role's Deployment, ServiceAccount, ClusterRole (or Roles) and
	// bindings share one name.
	chartControllers = release + "-controllers"
	chartReceiver    = release + "-receiver"
	chartMetricsAuth = release + "-metrics-auth"
)

// chartDeployments returns the controllers' and the receiver's Deployments.
func chartDeployments(t *testing.T, objs manifests) (ctrls, recv *appsv1.Deployment, all []*appsv1.Deployment) {
	t.Helper()
	ctrls = get[appsv1.Deployment](t, objs, "Deployment", chartControllers)
	recv = get[appsv1.Deployment](t, objs, "Deployment", chartReceiver)
	if n := len(objs.ofKind("Deployment")); n != 2 {
		t.Errorf("the chart renders %d Deployments, want 2", n)
	}
	return ctrls, recv, []*appsv1.Deployment{ctrls, recv}
}

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

	ctrls, recvD, all := chartDeployments(t, objs)
	for role, d := range map[string]*appsv1.Deployment{"controllers": ctrls, "receiver": recvD} {
		if d.Namespace != "ops" {
			t.Errorf("%s Deployment namespace = %q, want the release namespace ops", role, d.Namespace)
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("%s replicas = %v, want 2", role, d.Spec.Replicas)
		}
		c := checkManagerPod(t, d, role)
		if c.Image != "ghcr.io/imcallback/friend-deletion-operator:"+chartAppVersion(t) {
			t.Errorf("image = %s, want the chart's appVersion %s", c.Image, chartAppVersion(t))
		}
		for _, arg := range []string{"--zap-log-level=info", "--metrics-secure=true"} {
			if !hasArg(c.Args, arg) {
				t.Errorf("%s args %q lack %s", role, c.Args, arg)
			}
		}
		if strings.Contains(strings.Join(c.Args, " "), "--receiver-cert-dir") || strings.Contains(strings.Join(c.Args, " "), "--watch-namespaces") {
			t.Errorf("the receiver serves TLS or a namespace list is watched by default: %q", c.Args)
		}
		if sa := release + "-" + role; d.Spec.Template.Spec.ServiceAccountName != sa {
			t.Errorf("%s serviceAccountName = %q, want %q", role, d.Spec.Template.Spec.ServiceAccountName, sa)
		}
		get[corev1.ServiceAccount](t, objs, "ServiceAccount", release+"-"+role)
		checkSpreadOverNodes(t, d)
		checkResources(t, c, role)
	}
	// The controllers grant the receiver's ServiceAccount the token Secrets.
	for _, arg := range []string{"--leader-elect=true", "--leader-election-namespace=ops", "--receiver-service-account=ops/" + chartReceiver} {
		if c := ctrls.Spec.Template.Spec.Containers[0]; !hasArg(c.Args, arg) {
			t.Errorf("controllers args %q lack %s", c.Args, arg)
		}
	}
	rc := recvD.Spec.Template.Spec.Containers[0]
	checkSpool(t, recvD.Spec.Template.Spec, rc, nil)
	if !hasArg(rc.Args, "--receiver-shutdown-delay=5s") {
		t.Errorf("receiver args %q lack --receiver-shutdown-delay=5s", rc.Args)
	}
	if cc := ctrls.Spec.Template.Spec.Containers[0]; strings.Contains(strings.Join(cc.Args, " "), "--receiver-spool-dir") {
		t.Errorf("the controllers get a spool: %q", cc.Args)
	}
	if len(objs.ofKind("StatefulSet")) != 0 {
		t.Errorf("a StatefulSet is rendered though spool persistence is off")
	}

	recv := get[corev1.Service](t, objs, "Service", receiverSvc)
	if recv.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("receiver Service type = %s, want ClusterIP", recv.Spec.Type)
	}
	checkServiceReaches(t, recv, all, []*appsv1.Deployment{recvD}, "receiver", 80)
	metrics := get[corev1.Service](t, objs, "Service", metricsSvc)
	checkServiceReaches(t, metrics, all, all, "metrics", 8443)
	if metrics.Spec.Ports[0].Name != "https" {
		t.Errorf("metrics Service port is named %q, want https", metrics.Spec.Ports[0].Name)
	}

	for role, d := range map[string]*appsv1.Deployment{"controllers": ctrls, "receiver": recvD} {
		pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", release+"-"+role)
		if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
			t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
		}
		checkSelects(t, "PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector, all, d)
	}

	for _, kind := range []string{"Ingress", "Certificate", "ServiceMonitor", "NetworkPolicy", "PrometheusRule", "ConfigMap"} {
		if got := objs.ofKind(kind); len(got) != 0 {
			t.Errorf("a %s is rendered though it is off by default", kind)
		}
	}

	checkChartRBAC(t, objs, "ops", nil)
	for _, name := range []string{"callbackconfigs-edit", "callbackconfigs-view", "frienddeletions-edit", "frienddeletions-view"} {
		if objs.find("ClusterRole", release+"-"+name) == nil {
			t.Errorf("no aggregated ClusterRole %s-%s", release, name)
		}
	}
}

// checkSelects checks that a label selector selects the pods of want and
// of no other Deployment in all.
func checkSelects(t *testing.T, what string, ls *metav1.LabelSelector, all []*appsv1.Deployment, want ...*appsv1.Deployment) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Fatalf("%s selector: %v", what, err)
	}
	for _, d := range all {
		selected := !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels))
		expected := false
		for _, w := range want {
			expected = expected || w == d
		}
		if selected != expected {
			t.Errorf("%s selects Deployment %s's pods: %v, want %v", what, d.Name, selected, expected)
		}
	}
}

// checkChartRBAC checks the release's RBAC against the generated roles,
// both ways: each identity is granted exactly its generated rules (as a
// ClusterRole, or a Role in each of watchNamespaces), the metrics-auth
// rules, and the controllers a leader-election Role in the release
// namespace; no other binding names either identity.
func checkChartRBAC(t *testing.T, objs manifests, ns string, watchNamespaces []string) {
	t.Helper()
	ctrlsSA, recvSA := release+"-controllers", release+"-receiver"
	grantsOf := map[string][]string{
		ctrlsSA: {"ClusterRole/" + chartMetricsAuth},
		recvSA:  {"ClusterRole/" + chartMetricsAuth},
	}
	for _, r := range []struct{ name, file, sa string }{
		{chartControllers, generatedRole, ctrlsSA},
		{chartReceiver, generatedReceiverRole, recvSA},
	} {
		want := generatedRulesOf(t, r.file)
		if len(watchNamespaces) == 0 {
			role := get[rbacv1.ClusterRole](t, objs, "ClusterRole", r.name)
			if !reflect.DeepEqual(role.Rules, want) {
				t.Errorf("the chart's ClusterRole %s differs from %s (run `make chart-rbac`):\nchart: %+v\ngenerated: %+v", r.name, r.file, role.Rules, want)
			}
			crb := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", r.name)
			checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", r.name, ns, r.sa)
			grantsOf[r.sa] = append(grantsOf[r.sa], "ClusterRole/"+r.name)
			continue
		}
		if objs.find("ClusterRole", r.name) != nil || objs.find("ClusterRoleBinding", r.name) != nil {
			t.Errorf("a ClusterRole or ClusterRoleBinding %s is rendered though namespaces are listed", r.name)
		}
		for _, wns := range watchNamespaces {
			role := findIn[rbacv1.Role](t, objs, "Role", r.name, wns)
			if !reflect.DeepEqual(role.Rules, want) {
				t.Errorf("the chart's Role %s/%s differs from %s", wns, r.name, r.file)
			}
			rb := findIn[rbacv1.RoleBinding](t, objs, "RoleBinding", r.name, wns)
			checkBinding(t, rb.RoleRef, rb.Subjects, "Role", r.name, ns, r.sa)
			grantsOf[r.sa] = append(grantsOf[r.sa], "Role/"+r.name+"@"+wns)
		}
	}

	auth := get[rbacv1.ClusterRole](t, objs, "ClusterRole", chartMetricsAuth)
	if !reflect.DeepEqual(auth.Rules, generatedRulesOf(t, generatedMetricsAuthRole)) {
		t.Errorf("the chart's ClusterRole %s differs from %s", chartMetricsAuth, generatedMetricsAuthRole)
	}
	authB := get[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", chartMetricsAuth)
	checkBindingSubjects(t, authB.RoleRef, authB.Subjects, "ClusterRole", chartMetricsAuth, ns, ctrlsSA, recvSA)
	reader := get[rbacv1.ClusterRole](t, objs, "ClusterRole", release+"-metrics-reader")
	if want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}; !reflect.DeepEqual(reader.Rules, want) {
		t.Errorf("metrics-reader rules = %+v, want %+v", reader.Rules, want)
	}

	le := get[rbacv1.Role](t, objs, "Role", release+"-leader-election")
	if le.Namespace != ns {
		t.Errorf("leader-election Role is in %q, want %q", le.Namespace, ns)
	}
	if !reflect.DeepEqual(le.Rules, leaderElectionRules) {
		t.Errorf("leader-election Role rules = %+v, want exactly %+v", le.Rules, leaderElectionRules)
	}
	rb := get[rbacv1.RoleBinding](t, objs, "RoleBinding", release+"-leader-election")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", le.Name, ns, ctrlsSA)
	grantsOf[ctrlsSA] = append(grantsOf[ctrlsSA], "Role/"+le.Name+"@"+ns)

	checkBindingsOnly(t, objs, ns, grantsOf)
}

// findIn is get for a namespaced object that several namespaces hold.
func findIn[T any](t *testing.T, m manifests, kind, name, ns string) *T {
	t.Helper()
	for _, u := range m {
		if u.GetKind() == kind && u.GetName() == name && u.GetNamespace() == ns {
			obj := new(T)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
				t.Fatalf("converting %s %s/%s: %v", kind, ns, name, err)
			}
			return obj
		}
	}
	t.Fatalf("no %s %s/%s among the rendered objects", kind, ns, name)
	return nil
}

func checkBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name, ns, sa string) {
	t.Helper()
	checkBindingSubjects(t, ref, subjects, kind, name, ns, sa)
}

// checkBindingSubjects checks a binding's role and that its subjects are
// exactly the ServiceAccounts sas of namespace ns.
func checkBindingSubjects(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name, ns string, sas ...string) {
	t.Helper()
	if ref.Kind != kind || ref.Name != name {
		t.Errorf("binding refers to %s %s, want %s %s", ref.Kind, ref.Name, kind, name)
	}
	var want []rbacv1.Subject
	for _, sa := range sas {
		want = append(want, rbacv1.Subject{Kind: "ServiceAccount", Name: sa, Namespace: ns})
	}
	if !reflect.DeepEqual(subjects, want) {
		t.Errorf("binding subjects = %+v, want %+v", subjects, want)
	}
}

// checkBindingsOnly checks that the bindings among objs grant each
// ServiceAccount of namespace ns exactly the roles listed for it, written
// Kind/name for a ClusterRole and Kind/name@namespace for a Role.
func checkBindingsOnly(t *testing.T, objs manifests, ns string, want map[string][]string) {
	t.Helper()
	got := map[string][]string{}
	for _, u := range objs {
		var ref rbacv1.RoleRef
		var subjects []rbacv1.Subject
		switch u.GetKind() {
		case "ClusterRoleBinding":
			b := get[rbacv1.ClusterRoleBinding](t, manifests{u}, u.GetKind(), u.GetName())
			ref, subjects = b.RoleRef, b.Subjects
		case "RoleBinding":
			b := get[rbacv1.RoleBinding](t, manifests{u}, u.GetKind(), u.GetName())
			ref, subjects = b.RoleRef, b.Subjects
		default:
			continue
		}
		granted := ref.Kind + "/" + ref.Name
		if ref.Kind == "Role" {
			granted += "@" + u.GetNamespace()
		}
		for _, s := range subjects {
			if s.Kind == "ServiceAccount" && s.Namespace == ns {
				got[s.Name] = append(got[s.Name], granted)
			}
		}
	}
	for sa, roles := range want {
		if !sameSet(got[sa], roles) {
			t.Errorf("ServiceAccount %s/%s is granted %v, want exactly %v", ns, sa, got[sa], roles)
		}
	}
	for sa, roles := range got {
		if _, ok := want[sa]; !ok {
			t.Errorf("unexpected ServiceAccount %s/%s is granted %v", ns, sa, roles)
		}
	}
}

func sameSet(a, b []string) bool {
	set := map[string]int{}
	for _, s := range a {
		set[s]++
	}
	for _, s := range b {
		set[s]--
	}
	for _, n := range set {
		if n != 0 {
			return false
		}
	}
	return true
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

	ctrls, recvD, all := chartDeployments(t, objs)
	for role, d := range map[string]*appsv1.Deployment{"controllers": ctrls, "receiver": recvD} {
		c := checkManagerPod(t, d, role)
		if c.Image != "registry.example.com/im/friend-deletion-operator:v9.9.9" {
			t.Errorf("image = %s", c.Image)
		}
		for _, arg := range []string{"--zap-log-level=debug", "--watch-namespaces=im-prod,im-staging", "--zap-stacktrace-level=panic",
			"--metrics-cert-dir=/etc/metrics-tls"} {
			if !hasArg(c.Args, arg) {
				t.Errorf("%s args %q lack %s", role, c.Args, arg)
			}
		}
		// Each role has resources of its own.
		want := map[string][2]string{"controllers": {"300Mi", "512Mi"}, "receiver": {"128Mi", "192Mi"}}[role]
		if req, limit := c.Resources.Requests.Memory(), c.Resources.Limits.Memory(); !req.Equal(resource.MustParse(want[0])) || !limit.Equal(resource.MustParse(want[1])) {
			t.Errorf("%s memory request %s, limit %s; want %s, %s", role, req, limit, want[0], want[1])
		}
		if d.Spec.Template.Labels["team"] != "im" || d.Spec.Template.Spec.PriorityClassName != "system-cluster-critical" ||
			len(d.Spec.Template.Spec.Tolerations) != 1 || len(d.Spec.Template.Spec.ImagePullSecrets) != 1 {
			t.Errorf("pod labels, priority class, tolerations or pull secrets not applied: %+v", d.Spec.Template)
		}
		if got := secretMountedAt(d, "/etc/metrics-tls"); got != "metrics-serving-cert" {
			t.Errorf("%s mounts metrics TLS Secret %q, want metrics-serving-cert", role, got)
		}
		// Extra volumes, mounts and environment, annotations, spread.
		pod := d.Spec.Template.Spec
		if !hasVolume(pod, "private-ca", "private-ca-bundle") || !hasMount(c, "private-ca", "/etc/ssl/private-ca") {
			t.Errorf("%s lacks the extra volume private-ca mounted at /etc/ssl/private-ca: volumes %+v, mounts %+v", role, pod.Volumes, c.VolumeMounts)
		}
		if v := envValue(c, "SSL_CERT_DIR"); v != "/etc/ssl/certs:/etc/ssl/private-ca" {
			t.Errorf("%s SSL_CERT_DIR = %q, want the extraEnv value", role, v)
		}
		if d.Spec.Template.Annotations["example.com/scrape"] != "false" {
			t.Errorf("%s pod annotations %v lack podAnnotations", role, d.Spec.Template.Annotations)
		}
		if len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].TopologyKey != "topology.kubernetes.io/zone" {
			t.Errorf("%s topologySpreadConstraints %+v, want the given zone spread in place of the default", role, pod.TopologySpreadConstraints)
		}
	}
	if ctrls.Spec.Template.Spec.ServiceAccountName != "im-cleanup" || recvD.Spec.Template.Spec.ServiceAccountName != "im-callbacks" {
		t.Errorf("serviceAccountNames %q and %q, want im-cleanup and im-callbacks",
			ctrls.Spec.Template.Spec.ServiceAccountName, recvD.Spec.Template.Spec.ServiceAccountName)
	}
	if *ctrls.Spec.Replicas != 3 || *recvD.Spec.Replicas != 4 {
		t.Errorf("replicas = %d and %d, want 3 and 4", *ctrls.Spec.Replicas, *recvD.Spec.Replicas)
	}
	// Role-only options go to their role only.
	cArgs, rArgs := ctrls.Spec.Template.Spec.Containers[0].Args, recvD.Spec.Template.Spec.Containers[0].Args
	for _, arg := range []string{"--leader-elect=true", "--enable-example-reconciler"} {
		if !hasArg(cArgs, arg) || hasArg(rArgs, arg) {
			t.Errorf("%s should be on the controllers only: controllers %q, receiver %q", arg, cArgs, rArgs)
		}
	}
	for _, arg := range []string{"--receiver-cert-dir=/etc/receiver-tls", "--receiver-trust-forwarded-for", "--receiver-max-body-bytes=524288"} {
		if hasArg(cArgs, arg) || !hasArg(rArgs, arg) {
			t.Errorf("%s should be on the receiver only: controllers %q, receiver %q", arg, cArgs, rArgs)
		}
	}

	// TLS: cert-manager writes the Secret the receiver's pods mount.
	cert := objs.find("Certificate", receiverSvc)
	if cert == nil {
		t.Fatalf("no cert-manager Certificate %s", receiverSvc)
	}
	secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	if got := tlsSecretOf(recvD); got == "" || got != secret {
		t.Errorf("the receiver mounts TLS Secret %q, the Certificate writes %q", got, secret)
	}
	if got := tlsSecretOf(ctrls); got != "" {
		t.Errorf("the controllers mount the receiver's TLS Secret %q", got)
	}
	if issuer, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name"); issuer != "letsencrypt" {
		t.Errorf("Certificate issuer = %q, want letsencrypt", issuer)
	}

	recv := get[corev1.Service](t, objs, "Service", receiverSvc)
	if recv.Spec.Type != corev1.ServiceTypeLoadBalancer || recv.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("receiver Service type %s, externalTrafficPolicy %s; want LoadBalancer, Local", recv.Spec.Type, recv.Spec.ExternalTrafficPolicy)
	}
	checkServiceReaches(t, recv, all, []*appsv1.Deployment{recvD}, "receiver", 8443)
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
	rule := objs.find("PrometheusRule", release)
	if rule == nil {
		t.Fatalf("no PrometheusRule %s", release)
	}
	if rule.GetLabels()["release"] != "prometheus" {
		t.Errorf("PrometheusRule labels = %v, want release: prometheus", rule.GetLabels())
	}
	if raw, _ := yaml.Marshal(rule.Object); !strings.Contains(strings.Join(strings.Fields(string(raw)), " "), `{phase="Running"}) > 86400`) {
		t.Errorf("the PrometheusRule's FriendDeletionStuck does not use stuckAfterSeconds 86400:\n%s", raw)
	}
	smSel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	metrics := get[corev1.Service](t, objs, "Service", metricsSvc)
	if len(smSel) == 0 || !labels.SelectorFromSet(smSel).Matches(labels.Set(metrics.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service (labels %v)", smSel, metrics.Labels)
	}
	if labels.SelectorFromSet(smSel).Matches(labels.Set(recv.Labels)) {
		t.Errorf("ServiceMonitor selector %v also selects the receiver Service", smSel)
	}
	// Authenticated metrics: HTTPS with Prometheus's token and the given
	// TLS settings.
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints = %v, want one", endpoints)
	}
	ep := endpoints[0].(map[string]any)
	if ep["scheme"] != "https" || ep["port"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("ServiceMonitor endpoint %v should scrape port https over HTTPS with the ServiceAccount token", ep)
	}
	if name, _, _ := unstructured.NestedString(ep, "tlsConfig", "ca", "secret", "name"); name != "metrics-serving-cert" {
		t.Errorf("ServiceMonitor tlsConfig %v lacks the CA given", ep["tlsConfig"])
	}
	// The metrics' own namespace label (the CallbackConfig's) must survive
	// the scrape for the dashboard and the alerts.
	if ep["honorLabels"] != true {
		t.Errorf("ServiceMonitor endpoint %v, want honorLabels: true", ep)
	}

	// Callbacks reach the receiver's pods only; scrapes reach every pod.
	npRecv := get[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", release+"-receiver")
	checkSelects(t, "NetworkPolicy "+npRecv.Name, &npRecv.Spec.PodSelector, all, recvD)
	if got := policyPorts(npRecv); len(got) != 1 || !got["receiver"] {
		t.Errorf("NetworkPolicy %s should admit the receiver port only, admits %v", npRecv.Name, got)
	}
	npMetrics := get[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", release+"-metrics")
	checkSelects(t, "NetworkPolicy "+npMetrics.Name, &npMetrics.Spec.PodSelector, all, all...)
	if got := policyPorts(npMetrics); len(got) != 1 || !got["metrics"] {
		t.Errorf("NetworkPolicy %s should admit the metrics port only, admits %v", npMetrics.Name, got)
	}
	if n := len(objs.ofKind("NetworkPolicy")); n != 2 {
		t.Errorf("%d NetworkPolicies rendered, want 2", n)
	}

	for _, d := range all {
		pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", d.Name)
		if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(2) {
			t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 2", pdb.Spec.MaxUnavailable)
		}
		checkSelects(t, "PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector, all, d)
	}
}

// policyPorts returns the ports a NetworkPolicy admits.
func policyPorts(np *networkingv1.NetworkPolicy) map[string]bool {
	ports := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			ports[p.Port.String()] = true
		}
	}
	return ports
}

func TestChartReceiverTLSFromSecret(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "receiver.tls.enabled=true", "--set", "receiver.tls.secretName=receiver-cert"))
	_, recvD, all := chartDeployments(t, objs)
	if got := tlsSecretOf(recvD); got != "receiver-cert" {
		t.Errorf("the pod mounts TLS Secret %q, want receiver-cert", got)
	}
	if objs.find("Certificate", receiverSvc) != nil {
		t.Errorf("a Certificate is rendered though the Secret is given")
	}
	checkServiceReaches(t, get[corev1.Service](t, objs, "Service", receiverSvc), all, []*appsv1.Deployment{recvD}, "receiver", 443)
}

func TestChartSingleReplicaWithoutLeaderElection(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "controllers.replicaCount=1", "--set", "leaderElection.enabled=false"))
	ctrls, _, _ := chartDeployments(t, objs)
	c := checkManagerPod(t, ctrls, "controllers")
	if !hasArg(c.Args, "--leader-elect=false") {
		t.Errorf("args %q lack --leader-elect=false", c.Args)
	}
	if len(objs.ofKind("Role")) != 0 || len(objs.ofKind("RoleBinding")) != 0 {
		t.Errorf("leader-election RBAC is rendered without leader election")
	}
}

// With watchNamespaces, both roles' permissions are Roles in those
// namespaces, each exactly the generated rules, and no ClusterRole grants
// them anything but the metrics-auth rules.
func TestChartWatchNamespaces(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "watchNamespaces={im-prod,im-staging}"))
	checkChartRBAC(t, objs, "ops", []string{"im-prod", "im-staging"})
	_, _, all := chartDeployments(t, objs)
	for _, d := range all {
		if c := d.Spec.Template.Spec.Containers[0]; !hasArg(c.Args, "--watch-namespaces=im-prod,im-staging") {
			t.Errorf("%s args %q lack --watch-namespaces=im-prod,im-staging", d.Name, c.Args)
		}
	}
}

// metrics.secure=false, for development, serves plain HTTP and grants no
// token or access reviews.
func TestChartPlainMetrics(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "metrics.secure=false", "--set", "metrics.serviceMonitor.enabled=true"))
	_, _, all := chartDeployments(t, objs)
	for _, d := range all {
		if c := d.Spec.Template.Spec.Containers[0]; !hasArg(c.Args, "--metrics-secure=false") {
			t.Errorf("%s args %q lack --metrics-secure=false", d.Name, c.Args)
		}
	}
	if objs.find("ClusterRole", chartMetricsAuth) != nil || objs.find("ClusterRoleBinding", chartMetricsAuth) != nil {
		t.Errorf("metrics-auth RBAC is rendered though metrics are plain HTTP")
	}
	sm := objs.find("ServiceMonitor", release)
	if sm == nil {
		t.Fatalf("no ServiceMonitor %s", release)
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if ep := endpoints[0].(map[string]any); ep["scheme"] != "http" || ep["bearerTokenFile"] != nil || ep["tlsConfig"] != nil {
		t.Errorf("plain metrics ServiceMonitor endpoint = %v, want scheme http and no token or TLS", ep)
	}
}

// TestChartSpoolOnPersistentVolumes switches the receiver's spool to a
// claim per replica: the receiver runs as a StatefulSet whose pods the
// receiver Service and its PodDisruptionBudget select, and mounts its claim
// at the spool folder; the controllers stay a Deployment.
func TestChartSpoolOnPersistentVolumes(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "receiver.spool.persistence.enabled=true",
		"--set", "receiver.spool.persistence.storageClassName=fast", "--set", "receiver.spool.persistence.size=2Gi"))
	ctrls := get[appsv1.Deployment](t, objs, "Deployment", chartControllers)
	if n := len(objs.ofKind("Deployment")); n != 1 {
		t.Errorf("the chart renders %d Deployments, want only the controllers'", n)
	}
	sts := get[appsv1.StatefulSet](t, objs, "StatefulSet", chartReceiver)
	checkStatefulSetNames(t, objs, objs.find("StatefulSet", chartReceiver))
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", sts.Spec.Replicas)
	}
	// The pod template is the receiver Deployment's: check it the same way.
	recv := &appsv1.Deployment{ObjectMeta: sts.ObjectMeta, Spec: appsv1.DeploymentSpec{Selector: sts.Spec.Selector, Template: sts.Spec.Template}}
	c := checkManagerPod(t, recv, "receiver")
	checkSpool(t, sts.Spec.Template.Spec, c, sts.Spec.VolumeClaimTemplates)
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("volumeClaimTemplates = %+v, want one", sts.Spec.VolumeClaimTemplates)
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast" ||
		!pvc.Spec.Resources.Requests.Storage().Equal(resource.MustParse("2Gi")) ||
		len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteOnce {
		t.Errorf("claim template = %+v, want 2Gi ReadWriteOnce of class fast", pvc.Spec)
	}
	if psc := sts.Spec.Template.Spec.SecurityContext; psc == nil || psc.FSGroup == nil || *psc.FSGroup != 65532 {
		t.Errorf("pod securityContext.fsGroup should be 65532 so the manager can write its claim, got %+v", psc)
	}
	all := []*appsv1.Deployment{ctrls, recv}
	checkServiceReaches(t, get[corev1.Service](t, objs, "Service", receiverSvc), all, []*appsv1.Deployment{recv}, "receiver", 80)
	pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", chartReceiver)
	checkSelects(t, "PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector, all, recv)
}

// A shutdown delay is accepted while 20 s more stay below the receiver's
// grace period, whatever its units.
func TestChartShutdownDelayFitsGracePeriod(t *testing.T) {
	for _, set := range [][]string{
		{"receiver.shutdownDelay=24s"},
		{"receiver.shutdownDelay=24.5s"},
		{"receiver.shutdownDelay=1500ms"},
		{"receiver.shutdownDelay=1m", "receiver.terminationGracePeriodSeconds=81"},
		{"receiver.shutdownDelay=1m30s", "receiver.terminationGracePeriodSeconds=111"},
	} {
		var args []string
		for _, s := range set {
			args = append(args, "--set", s)
		}
		objs := decode(t, mustHelmTemplate(t, "ops", args...))
		recv := get[appsv1.Deployment](t, objs, "Deployment", chartReceiver)
		delay := strings.TrimPrefix(set[0], "receiver.shutdownDelay=")
		if !hasArg(recv.Spec.Template.Spec.Containers[0].Args, "--receiver-shutdown-delay="+delay) {
			t.Errorf("--set %v: the receiver's args %v lack --receiver-shutdown-delay=%s", set, recv.Spec.Template.Spec.Containers[0].Args, delay)
		}
	}
}

func TestChartRefusesBrokenValues(t *testing.T) {
	for name, tc := range map[string]struct {
		set  []string
		want string
	}{
		"replicas without leader election": {[]string{"leaderElection.enabled=false"}, "needs leaderElection.enabled"},
		"a namespace that is no name":      {[]string{"watchNamespaces={Im_Prod}"}, "watchNamespaces"},
		"the old replicaCount":             {[]string{"replicaCount=3"}, "replicaCount"},
		"the removed token Secret list":    {[]string{"receiver.tokenSecrets[0].namespace=chat,receiver.tokenSecrets[0].name=im-token"}, "tokenSecrets"},
		"TLS without a certificate source": {[]string{"receiver.tls.enabled=true"}, "receiver.tls.secretName"},
		"cert-manager without an issuer":   {[]string{"receiver.tls.enabled=true", "receiver.tls.certManager.enabled=true"}, "issuerRef.name"},
		"cert-manager without TLS":         {[]string{"receiver.tls.certManager.enabled=true"}, "needs receiver.tls.enabled"},
		"public TLS without its host name": {[]string{"receiver.service.type=LoadBalancer", "receiver.tls.enabled=true",
			"receiver.tls.certManager.enabled=true", "receiver.tls.certManager.issuerRef.name=letsencrypt"}, "receiver.tls.certManager.dnsNames"},
		"Ingress without a host":               {[]string{"ingress.enabled=true"}, "ingress.hosts"},
		"misspelt value":                       {[]string{"reciever.tls.enabled=true"}, "reciever"},
		"extra mount without a path":           {[]string{"extraVolumeMounts[0].name=ca"}, "mountPath"},
		"unknown Service type":                 {[]string{"receiver.service.type=ExternalName"}, "receiver/service/type"},
		"spool claims without a spool":         {[]string{"receiver.spool.enabled=false", "receiver.spool.persistence.enabled=true"}, "needs receiver.spool.enabled"},
		"shutdown delay past the grace period": {[]string{"receiver.shutdownDelay=25s"}, "receiver.terminationGracePeriodSeconds (45)"},
		"a delay in minutes past the grace period": {[]string{"receiver.shutdownDelay=1m", "receiver.terminationGracePeriodSeconds=80"},
			"above 80 or shorten"},
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
// CRDs from crds/ and renders the roles from files/.
func TestChartCopiesAreCurrent(t *testing.T) {
	bases, err := filepath.Glob(filepath.Join(root, generatedCRDs, "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in %s: %v", generatedCRDs, err)
	}
	copies, _ := filepath.Glob(filepath.Join(root, chartDir, "crds", "*.yaml"))
	if len(copies) != len(bases) {
		t.Errorf("%s/crds holds %d files, %s %d: run `make chart-crds`", chartDir, len(copies), generatedCRDs, len(bases))
	}
	pairs := map[string]string{
		generatedRole:            filepath.Join(chartDir, "files", "manager-role.yaml"),
		generatedReceiverRole:    filepath.Join(chartDir, "files", "receiver-role.yaml"),
		generatedMetricsAuthRole: filepath.Join(chartDir, "files", "metrics-auth-role.yaml"),
	}
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
	return secretMountedAt(d, "/etc/receiver-tls")
}

// secretMountedAt returns the Secret mounted at path, or "".
func secretMountedAt(d *appsv1.Deployment, path string) string {
	c := d.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if m.MountPath != path {
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

// hasVolume reports whether the pod has a volume of that name from that
// ConfigMap.
func hasVolume(pod corev1.PodSpec, name, configMap string) bool {
	for _, v := range pod.Volumes {
		if v.Name == name && v.ConfigMap != nil && v.ConfigMap.Name == configMap {
			return true
		}
	}
	return false
}

// hasMount reports whether the container mounts volume name at path.
func hasMount(c corev1.Container, name, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name && m.MountPath == path {
			return true
		}
	}
	return false
}

// envValue returns the value of the container's environment variable name.
func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// checkSpreadOverNodes checks the default spread of a Deployment's replicas
// over nodes: by host name, counting that Deployment's own pods.
func checkSpreadOverNodes(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	tsc := d.Spec.Template.Spec.TopologySpreadConstraints
	if len(tsc) != 1 || tsc[0].TopologyKey != corev1.LabelHostname || tsc[0].MaxSkew != 1 {
		t.Errorf("%s topologySpreadConstraints = %+v, want one spreading over %s", d.Name, tsc, corev1.LabelHostname)
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(tsc[0].LabelSelector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s spreads pods selected by %v, not its own (%v)", d.Name, tsc[0].LabelSelector, d.Spec.Template.Labels)
	}
}

// A GOMEMLIMIT in extraEnv is set once, as given: the manager keeps it
// rather than taking 90% of MEMORY_LIMIT.
func TestChartGoMemLimitOverride(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "extraEnv[0].name=GOMEMLIMIT", "--set", "extraEnv[0].value=400MiB"))
	ctrls, recvD, _ := chartDeployments(t, objs)
	for _, d := range []*appsv1.Deployment{ctrls, recvD} {
		c := d.Spec.Template.Spec.Containers[0]
		n := 0
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				n++
			}
		}
		if n != 1 || envValue(c, "GOMEMLIMIT") != "400MiB" {
			t.Errorf("%s env %+v, want GOMEMLIMIT=400MiB once", d.Name, c.Env)
		}
	}
}
