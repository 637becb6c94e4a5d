package install

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// upgradeCRDs is the CRD upgrade docs/install.md gives for Helm installs,
// with this repository's chart folder and the test control plane.
const upgradeCRDs = `"$HELM" show crds "$CHART" | "$KUBECTL" --kubeconfig "$KUBECONFIG" apply --server-side --force-conflicts -f -`

// shell runs a shell pipeline with the helm and kubectl the tests use and a
// kubeconfig for the test control plane in its environment.
func shell(t *testing.T, pipeline string) (string, error) {
	t.Helper()
	kubectl := filepath.Join(env.Environment.BinaryAssetsDirectory, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Skipf("kubectl is not built in %s", env.Environment.BinaryAssetsDirectory)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.Environment.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "sh", "-ec", pipeline)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "HELM="+tool(t, "helm"), "KUBECTL="+kubectl, "KUBECONFIG="+kubeconfig, "CHART="+chartDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// The documented CRD upgrade brings CRDs that `helm install` created from an
// older chart up to the chart's: Helm never upgrades crds/ itself.
func TestUpgradeCRDsFromTheChart(t *testing.T) {
	const name = "frienddeletions.sns.imcallback.io"
	ctx := t.Context()
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	current := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, current); err != nil {
		t.Fatal(err)
	}
	want := current.Spec.Versions[0].Schema.OpenAPIV3Schema.Description
	t.Cleanup(func() {
		// Whatever happens, leave the CRD as the other tests expect it.
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(t.Context(), client.ObjectKey{Name: name}, crd); err == nil {
			crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = want
			_ = c.Update(t.Context(), crd)
		}
	})

	// An older release's CRD, written as `helm install` writes crds/: by an
	// update of field manager helm, which then owns the changed field.
	old := current.DeepCopy()
	old.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "FriendDeletion of an older release"
	if err := c.Update(ctx, old, client.FieldOwner("helm")); err != nil {
		t.Fatal(err)
	}

	// Without --force-conflicts, kubectl refuses to take over the fields
	// Helm owns: the flag is needed.
	withoutForce := strings.Replace(upgradeCRDs, " --force-conflicts", "", 1)
	out, err := shell(t, withoutForce)
	if err == nil || !strings.Contains(out, "conflict") {
		t.Errorf("the upgrade without --force-conflicts: %v\n%s\nwant a conflict with manager helm", err, out)
	}

	out, err = shell(t, upgradeCRDs)
	if err != nil {
		t.Fatalf("%s: %v\n%s", upgradeCRDs, err, out)
	}
	for _, crd := range []string{"callbackconfigs.sns.imcallback.io", name} {
		if !strings.Contains(out, "customresourcedefinition.apiextensions.k8s.io/"+crd+" serverside-applied") {
			t.Errorf("the upgrade did not apply CRD %s:\n%s", crd, out)
		}
	}
	got := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
		t.Fatal(err)
	}
	if d := got.Spec.Versions[0].Schema.OpenAPIV3Schema.Description; d != want {
		t.Errorf("after the upgrade the CRD's schema says %q, want the chart's %q", d, want)
	}
}

// `helm upgrade --reuse-values` keeps the old release's values and drops the
// new chart's new defaults, so the docs never give it.
func TestDocsNeverReuseValues(t *testing.T) {
	docs := string(readFile(t, "docs/install.md"))
	for _, line := range strings.Split(docs, "\n") {
		if strings.Contains(line, "--reuse-values") && !strings.Contains(strings.ToLower(line), "never") {
			t.Errorf("docs/install.md recommends --reuse-values: %q", line)
		}
	}
	if !strings.Contains(docs, "--reset-then-reuse-values") {
		t.Errorf("docs/install.md does not give helm upgrade --reset-then-reuse-values")
	}
}
