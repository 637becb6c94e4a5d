// Command crdtrim removes the descriptions below the embedded Kubernetes types
// of the generated CRDs (a Job template carries the whole PodSpec, whose
// documentation alone is over half a megabyte), so that the CRDs stay small
// enough for `kubectl apply` and etcd. The project's own fields keep their
// documentation for `kubectl explain`.
//
// Usage: go run ./hack/crdtrim FILE PATH...
// where each PATH is a dot-separated property path below openAPIV3Schema,
// such as spec.cleanup.job.spec. The file is rewritten in place.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: crdtrim FILE PATH...")
		os.Exit(2)
	}
	if err := trimFile(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "crdtrim:", err)
		os.Exit(1)
	}
}

func trimFile(file string, paths []string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	// controller-gen writes a "---" line first; keep it.
	header, body, _ := bytes.Cut(raw, []byte("\n"))
	var crd map[string]any
	if err := yaml.Unmarshal(body, &crd); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	versions, _ := dig(crd, "spec", "versions").([]any)
	if len(versions) == 0 {
		return fmt.Errorf("%s: no spec.versions", file)
	}
	for _, v := range versions {
		schema, _ := dig(v, "schema", "openAPIV3Schema").(map[string]any)
		for _, p := range paths {
			node := schema
			for _, name := range strings.Split(p, ".") {
				node = child(node, name)
				if node == nil {
					return fmt.Errorf("%s: no property %s", file, p)
				}
			}
			for _, prop := range node {
				stripDescriptions(prop)
			}
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(append(header, '\n'), out...), 0o644)
}

// child steps into a property, through an array's items when needed.
func child(node map[string]any, name string) map[string]any {
	if items, ok := node["items"].(map[string]any); ok {
		node = items
	}
	next, _ := dig(node, "properties", name).(map[string]any)
	return next
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func stripDescriptions(v any) {
	switch t := v.(type) {
	case map[string]any:
		delete(t, "description")
		for _, c := range t {
			stripDescriptions(c)
		}
	case []any:
		for _, c := range t {
			stripDescriptions(c)
		}
	}
}
