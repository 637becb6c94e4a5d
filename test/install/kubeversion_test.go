package install

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

// validationRules returns every x-kubernetes-validations rule of the CRDs
// in config/crd/bases.
func validationRules(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, generatedCRDs, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s: %v", generatedCRDs, err)
	}
	var rules []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if list, ok := v["x-kubernetes-validations"].([]any); ok {
				for _, r := range list {
					if rule, ok := r.(map[string]any)["rule"].(string); ok {
						rules = append(rules, rule)
					}
				}
			}
			for _, child := range v {
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	for _, f := range files {
		var crd map[string]any
		if err := yaml.Unmarshal(readFile(t, filepath.Join(generatedCRDs, filepath.Base(f))), &crd); err != nil {
			t.Fatal(err)
		}
		walk(crd)
	}
	if len(rules) == 0 {
		t.Fatal("the CRDs hold no validation rules")
	}
	return rules
}

// compileAll compiles rules as an API server whose CEL compatibility
// version is 1.<minor> compiles the rules of a CRD being created; it
// returns the first failure.
func compileAll(minor uint, rules []string) error {
	env, err := environment.MustBaseEnvSet(version.MajorMinor(1, minor)).NewExpressionsEnv().Extend(
		cel.Variable("self", cel.DynType), cel.Variable("oldSelf", cel.DynType))
	if err != nil {
		return err
	}
	for _, rule := range rules {
		if _, issues := env.Compile(rule); issues.Err() != nil {
			return fmt.Errorf("%s: %w", rule, issues.Err())
		}
	}
	return nil
}

// The CRDs' CEL rules decide the oldest Kubernetes release that accepts
// them. An API server compiles the rules of a new CRD with the CEL
// libraries of its compatibility version, one minor release below its own
// (so that a rollback keeps working): a library introduced in 1.N is usable
// from 1.(N+1). Chart.yaml's kubeVersion must name that release.
func TestKubeVersionFitsTheCRDs(t *testing.T) {
	rules := validationRules(t)
	if err := compileAll(37, rules); err != nil {
		t.Fatalf("a rule does not compile with the CEL libraries of Kubernetes 1.37: %v", err)
	}
	compat := uint(37)
	for compat > 24 && compileAll(compat-1, rules) == nil {
		compat--
	}
	t.Logf("every rule compiles from CEL compatibility version 1.%d: Kubernetes 1.%d", compat, compat+1)
	if compat > 24 {
		t.Logf("with 1.%d's libraries: %v", compat-1, compileAll(compat-1, rules))
	}

	m := regexp.MustCompile(`(?m)^kubeVersion:\s*"?>=\s*1\.(\d+)\.0-0"?\s*$`).FindStringSubmatch(string(readFile(t, filepath.Join(chartDir, "Chart.yaml"))))
	if m == nil {
		t.Fatal(`Chart.yaml has no kubeVersion: ">=1.N.0-0"`)
	}
	declared, _ := strconv.Atoi(m[1])
	if uint(declared) != compat+1 {
		t.Errorf("Chart.yaml says kubeVersion >=1.%d, the CRDs' rules need 1.%d", declared, compat+1)
	}
}

// Helm refuses to install the chart on a cluster older than kubeVersion.
func TestChartRefusesOldKubernetes(t *testing.T) {
	if _, err := helmTemplate(t, "ops", "--kube-version", "1.30.14"); err == nil || !strings.Contains(err.Error(), "kubeVersion") {
		t.Errorf("helm template --kube-version 1.30.14: error %v, want a refusal naming kubeVersion", err)
	}
	if _, err := helmTemplate(t, "ops", "--kube-version", "1.31.0"); err != nil {
		t.Errorf("helm template --kube-version 1.31.0: %v", err)
	}
}
