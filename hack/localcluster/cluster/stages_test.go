package cluster

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// kwokStageSources maps each stage copied from kwok to its path in the kwok
// module.
var kwokStageSources = map[string]string{
	"node-initialize.yaml":           "kustomize/stage/node/fast/node-initialize.yaml",
	"node-heartbeat-with-lease.yaml": "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"pod-ready.yaml":                 "kustomize/stage/pod/fast/pod-ready.yaml",
	"pod-complete.yaml":              "kustomize/stage/pod/fast/pod-complete.yaml",
	"pod-delete.yaml":                "kustomize/stage/pod/fast/pod-delete.yaml",
}

// TestStagesMatchKwok fails when the copied stages differ from those of the
// kwok version that hack/controlplane builds, so an upgrade cannot leave
// them stale. It needs that kwok module in the module cache, as it is once
// `make control-plane` has run.
func TestStagesMatchKwok(t *testing.T) {
	version := kwokVersion(t)
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	moduleDir := filepath.Join(strings.TrimSpace(string(out)), "sigs.k8s.io", "kwok@"+version)
	if _, err := os.Stat(moduleDir); err != nil {
		t.Skipf("sigs.k8s.io/kwok@%s is not in the module cache (`make control-plane` downloads it)", version)
	}
	for ours, theirs := range kwokStageSources {
		got, err := stagesFS.ReadFile("stages/" + ours)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(moduleDir, theirs))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("stages/%s differs from %s in sigs.k8s.io/kwok@%s: copy it again", ours, theirs, version)
		}
	}
}

// kwokVersion reads the kwok version pinned in hack/controlplane/go.mod.
func kwokVersion(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "controlplane", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "sigs.k8s.io/kwok" {
			return fields[1]
		}
	}
	t.Fatal("no sigs.k8s.io/kwok in hack/controlplane/go.mod")
	return ""
}

// TestStagesYAML checks that every stage file is in the file kwok reads, in
// order, as a Stage with a unique name, and that the pod-fail stage selects
// pods by FailAnnotation and outranks pod-complete.
func TestStagesYAML(t *testing.T) {
	entries, err := stagesFS.ReadDir("stages")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(stageFiles) {
		t.Errorf("stages/ holds %d files, stageFiles lists %d", len(entries), len(stageFiles))
	}
	data, err := stagesYAML()
	if err != nil {
		t.Fatal(err)
	}
	type stage struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Weight   int `json:"weight"`
			Selector struct {
				MatchAnnotations map[string]string `json:"matchAnnotations"`
			} `json:"selector"`
		} `json:"spec"`
	}
	docs := strings.Split(string(data), "\n---\n")
	if len(docs) != len(stageFiles) {
		t.Fatalf("got %d YAML documents, want %d", len(docs), len(stageFiles))
	}
	byName := map[string]stage{}
	for i, doc := range docs {
		var s stage
		if err := yaml.Unmarshal([]byte(doc), &s); err != nil {
			t.Fatalf("document %d (%s): %v", i, stageFiles[i], err)
		}
		if want := strings.TrimSuffix(stageFiles[i], ".yaml"); s.Kind != "Stage" || s.Metadata.Name != want {
			t.Errorf("document %d is %s %q, want Stage %q", i, s.Kind, s.Metadata.Name, want)
		}
		byName[s.Metadata.Name] = s
	}
	fail, complete := byName["pod-fail"], byName["pod-complete"]
	if got := fail.Spec.Selector.MatchAnnotations[FailAnnotation]; got != "true" {
		t.Errorf("pod-fail selects %s=%q, want \"true\"", FailAnnotation, got)
	}
	if fail.Spec.Weight <= complete.Spec.Weight || complete.Spec.Weight != 0 {
		t.Errorf("pod-fail weight %d must beat pod-complete weight %d (which must be 0)", fail.Spec.Weight, complete.Spec.Weight)
	}
}
