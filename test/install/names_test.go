package install

import (
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// longRelease is as long as Helm lets a release name be (53 characters):
// its full name with the chart's name is cut to 63, and every object name
// derived from it must still fit 63.
const longRelease = "im-callbacks-production-cluster-east-friend-deletions"

// Every name the chart derives from a release name of Helm's maximum length
// fits the 63 characters a Service name (a DNS-1035 label) may have, stays
// unique, and the API server accepts every object in a server-side dry run.
// With the spool on claims the receiver is a StatefulSet: its serviceName is
// the receiver Service's name, and its own name leaves room for the
// controller-revision-hash label its pods carry.
func TestChartLongReleaseName(t *testing.T) {
	if len(longRelease) != 53 {
		t.Fatalf("the release name has %d characters, want Helm's maximum 53", len(longRelease))
	}
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join("testdata", "crds")},
		ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("installing stand-in CRDs: %v", err)
	}
	helm := tool(t, "helm")
	for name, args := range map[string][]string{
		"default values":    nil,
		"every option used": {"--values", everything},
		"spool on claims":   {"--set", "receiver.spool.persistence.enabled=true"},
	} {
		t.Run(name, func(t *testing.T) {
			ns := env.Namespace(t)
			createNamespace(t, "im-prod")
			createNamespace(t, "im-staging")
			rendered, err := run(t, helm, append([]string{"template", longRelease, chartDir, "--namespace", ns, "--include-crds"}, args...)...)
			if err != nil {
				t.Fatalf("helm template %s: %v", longRelease, err)
			}
			objs := decode(t, rendered)
			seen := map[string]bool{}
			for _, u := range objs {
				key := u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
				if seen[key] {
					t.Errorf("two objects named %s", key)
				}
				seen[key] = true
				if u.GetKind() == "CustomResourceDefinition" {
					continue
				}
				if errs := validation.IsDNS1035Label(u.GetName()); len(errs) > 0 {
					t.Errorf("%s %q is not a 63-character DNS label: %s", u.GetKind(), u.GetName(), strings.Join(errs, "; "))
				}
				for k, v := range u.GetLabels() {
					if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
						t.Errorf("%s %s: label %s=%q: %s", u.GetKind(), u.GetName(), k, v, strings.Join(errs, "; "))
					}
				}
			}
			for _, u := range objs.ofKind("StatefulSet") {
				checkStatefulSetNames(t, objs, u)
			}
			if name == "spool on claims" && len(objs.ofKind("StatefulSet")) != 1 {
				t.Errorf("%d StatefulSets rendered, want the receiver's", len(objs.ofKind("StatefulSet")))
			}
			for _, kind := range []string{"Deployment", "StatefulSet", "Service"} {
				for _, u := range objs.ofKind(kind) {
					if !strings.HasPrefix(u.GetName(), longRelease[:30]) {
						t.Errorf("%s %q does not start with the release name", kind, u.GetName())
					}
				}
			}
			applyDryRun(t, writeTemp(t, "chart.yaml", rendered))
		})
	}
}

// Names that fit are left whole: release fdo gets fdo-friend-deletion-operator-<suffix>.
func TestChartShortNamesUncut(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops"))
	for _, want := range []struct{ kind, name string }{
		{"Service", receiverSvc}, {"Service", metricsSvc},
		{"Deployment", chartReceiver}, {"Deployment", chartControllers},
	} {
		if objs.find(want.kind, want.name) == nil {
			t.Errorf("no %s %s", want.kind, want.name)
		}
	}
}

// maxStatefulSetName is the longest StatefulSet name whose pods the API
// server accepts: each pod carries the label
// controller-revision-hash=<StatefulSet name>-<hash of up to 10 characters>,
// and a label value has at most 63 characters.
const maxStatefulSetName = 52

// checkStatefulSetNames checks that the StatefulSet u names the receiver
// Service among objs as its governing Service, and that its name leaves room
// for its pods' controller-revision-hash label.
func checkStatefulSetNames(t *testing.T, objs manifests, u *unstructured.Unstructured) {
	t.Helper()
	if n := len(u.GetName()); n > maxStatefulSetName {
		t.Errorf("StatefulSet %q has %d characters, over the %d its pods' controller-revision-hash label allows", u.GetName(), n, maxStatefulSetName)
	}
	if errs := validation.IsValidLabelValue(u.GetName() + "-7d9f8c6b5a"); len(errs) > 0 {
		t.Errorf("StatefulSet %q: its pods' controller-revision-hash label would be refused: %s", u.GetName(), strings.Join(errs, "; "))
	}
	var receivers []string
	for _, svc := range objs.ofKind("Service") {
		if svc.GetLabels()["app.kubernetes.io/component"] == "receiver" {
			receivers = append(receivers, svc.GetName())
		}
	}
	serviceName, _, _ := unstructured.NestedString(u.Object, "spec", "serviceName")
	if len(receivers) != 1 || serviceName != receivers[0] {
		t.Errorf("StatefulSet %q has serviceName %q, want the receiver Service's name (receiver Services: %q)", u.GetName(), serviceName, receivers)
	}
}
