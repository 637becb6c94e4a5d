package install

import (
	"path/filepath"
	"strings"
	"testing"

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
			for _, kind := range []string{"Deployment", "Service"} {
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
