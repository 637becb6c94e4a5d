package cluster

import (
	"embed"
	"strings"
)

// FailAnnotation, set to "true" on a pod (in a Job, on its pod template),
// makes the local cluster's kwok fail the pod with exit code 1 once it runs,
// instead of completing it. See stages/README.md.
const FailAnnotation = "localcluster.imcallback.io/fail"

// stageFiles are the kwok Stage objects the local cluster runs with, in the
// order kwok reads them.
var stageFiles = []string{
	"node-initialize.yaml",
	"node-heartbeat-with-lease.yaml",
	"pod-ready.yaml",
	"pod-complete.yaml",
	"pod-fail.yaml",
	"pod-delete.yaml",
}

//go:embed stages/*.yaml
var stagesFS embed.FS

// stagesYAML returns every stage as one multi-document YAML file, the form
// kwok's --config takes.
func stagesYAML() ([]byte, error) {
	docs := make([]string, 0, len(stageFiles))
	for _, name := range stageFiles {
		data, err := stagesFS.ReadFile("stages/" + name)
		if err != nil {
			return nil, err
		}
		docs = append(docs, strings.TrimSpace(string(data)))
	}
	return []byte(strings.Join(docs, "\n---\n") + "\n"), nil
}
