package install

import (
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// The image cannot be built on these machines, so this checks what the
// Dockerfile's `go build .` needs from the build context: every source file
// of the manager's own packages must get past .dockerignore.
func TestDockerContextHoldsTheManagerSources(t *testing.T) {
	ignore := parseDockerignore(string(readFile(t, ".dockerignore")))

	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps",
		"-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, ".")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps .: %v", err)
	}
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		dir, err := filepath.Rel(root, fields[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields[1:] {
			files = append(files, filepath.ToSlash(filepath.Join(dir, f)))
		}
	}
	files = append(files, "go.mod", "go.sum")
	if !contains(files, "main.go") {
		t.Fatalf("go list found no main.go among the manager's sources: %v", files)
	}
	for _, f := range files {
		if ignore.excludes(f) {
			t.Errorf(".dockerignore keeps %s, which the manager's build needs, out of the image's build context", f)
		}
	}
	for _, f := range []string{"bin/controller-gen", "dist/install.yaml", "charts/friend-deletion-operator/Chart.yaml", "api/v1alpha1/validation_test.go", ".git/HEAD"} {
		if !ignore.excludes(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

// dockerignore is the ordered pattern list of a .dockerignore file.
type dockerignore []struct {
	pattern string
	negate  bool
}

func parseDockerignore(content string) dockerignore {
	var d dockerignore
	for _, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		negate := strings.HasPrefix(line, "!")
		p := path.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/"))
		d = append(d, struct {
			pattern string
			negate  bool
		}{p, negate})
	}
	return d
}

// excludes applies the patterns the way Docker does: the last matching
// pattern wins, and a pattern matching a folder matches everything in it.
// "**" matches any number of folders.
func (d dockerignore) excludes(file string) bool {
	excluded := false
	for _, p := range d {
		if matchesPathOrParent(p.pattern, file) {
			excluded = !p.negate
		}
	}
	return excluded
}

func matchesPathOrParent(pattern, file string) bool {
	for f := file; f != "." && f != "/"; f = path.Dir(f) {
		if globMatch(strings.Split(pattern, "/"), strings.Split(f, "/")) {
			return true
		}
	}
	return false
}

func globMatch(pattern, name []string) bool {
	if len(pattern) == 0 {
		return len(name) == 0
	}
	if pattern[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if globMatch(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	ok, err := path.Match(pattern[0], name[0])
	return err == nil && ok && globMatch(pattern[1:], name[1:])
}
