package install

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

const (
	managerImage = "ghcr.io/imcallback/friend-deletion-operator"
	versionPkg   = "github.com/imcallback/friend-deletion-operator/internal/version"
)

// goModVersion is the Go version go.mod asks for: its toolchain directive
// when it has one, else its go directive.
func goModVersion(t *testing.T) string {
	t.Helper()
	var goVersion, toolchain string
	for _, line := range strings.Split(string(readFile(t, "go.mod")), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "go" {
			goVersion = fields[1]
		}
		if len(fields) == 2 && fields[0] == "toolchain" {
			toolchain = strings.TrimPrefix(fields[1], "go")
		}
	}
	if toolchain != "" {
		return toolchain
	}
	if goVersion == "" {
		t.Fatal("go.mod has no go directive")
	}
	return goVersion
}

// The builder image is the Go release go.mod names, so the image is built
// with the toolchain the tests ran with.
func TestDockerfileGoVersionIsGoMods(t *testing.T) {
	m := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(string(readFile(t, "Dockerfile")))
	if m == nil {
		t.Fatal("the Dockerfile has no `ARG GO_VERSION=<version>` line")
	}
	if want := goModVersion(t); m[1] != want {
		t.Errorf("the Dockerfile builds with Go %s, go.mod asks for %s: set ARG GO_VERSION=%s", m[1], want, want)
	}
}

// What a multi-platform build without emulation and a cached, stamped build
// need from the Dockerfile. The image cannot be built on these machines;
// TestDockerfileStampsVersion runs its go build.
func TestDockerfileLines(t *testing.T) {
	dockerfile := string(readFile(t, "Dockerfile"))
	for _, want := range []string{
		"# syntax=docker/dockerfile:1",
		"FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder",
		"ARG TARGETOS",
		"ARG TARGETARCH",
		"CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH}",
		"--mount=type=cache,target=/go/pkg/mod",
		"--mount=type=cache,target=/root/.cache/go-build",
		`org.opencontainers.image.source="https://github.com/imcallback/friend-deletion-operator"`,
		`org.opencontainers.image.version="${VERSION}"`,
		`org.opencontainers.image.revision="${COMMIT}"`,
		"FROM gcr.io/distroless/static:nonroot",
		"USER 65532:65532",
	} {
		if !strings.Contains(dockerfile, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}

// dockerfileLDFlags returns the -ldflags value of the Dockerfile's go build
// with the build arguments VERSION and COMMIT filled in.
func dockerfileLDFlags(t *testing.T, version, commit string) string {
	t.Helper()
	m := regexp.MustCompile(`-ldflags="([^"]*)"`).FindStringSubmatch(string(readFile(t, "Dockerfile")))
	if m == nil {
		t.Fatal(`the Dockerfile's go build has no -ldflags="..."`)
	}
	return strings.NewReplacer("${VERSION}", version, "${COMMIT}", commit).Replace(m[1])
}

// checkVersionOutput runs a built manager with --version and checks that it
// prints the stamped version and commit.
func checkVersionOutput(t *testing.T, bin, version, commit string) {
	t.Helper()
	out, err := run(t, bin, "--version")
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	want := "friend-deletion-operator " + version + " (commit " + commit + ","
	if !strings.HasPrefix(out, want) {
		t.Errorf("--version printed %q, want it to start with %q", out, want)
	}
}

// The Dockerfile's linker flags name the package --version reads.
func TestDockerfileStampsVersion(t *testing.T) {
	ldflags := dockerfileLDFlags(t, "v1.2.3", "0123456789abcdef")
	if !strings.Contains(ldflags, versionPkg+".Version=v1.2.3") || !strings.Contains(ldflags, versionPkg+".Commit=0123456789abcdef") {
		t.Fatalf("the Dockerfile's -ldflags do not stamp %s: %s", versionPkg, ldflags)
	}
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := run(t, "go", "build", "-trimpath", "-ldflags="+ldflags, "-o", bin, "."); err != nil {
		t.Fatalf("go build with the Dockerfile's -ldflags: %v\n%s", err, out)
	}
	checkVersionOutput(t, bin, "v1.2.3", "0123456789abcdef")
}

// `make build` stamps VERSION and COMMIT the same way.
func TestMakeBuildStampsVersion(t *testing.T) {
	dir := t.TempDir()
	if out, err := run(t, "make", "--no-print-directory", "build", "BIN="+dir, "VERSION=v4.5.6", "COMMIT=fedcba9876543210"); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	checkVersionOutput(t, filepath.Join(dir, "manager"), "v4.5.6", "fedcba9876543210")
}

// images returns the images of every Deployment's containers in a
// rendered manifest stream, failing the test when there is none.
func images(t *testing.T, stream string) []string {
	t.Helper()
	var out []string
	for _, u := range decode(t, stream).ofKind("Deployment") {
		d := get[appsv1.Deployment](t, manifests{u}, "Deployment", u.GetName())
		for _, c := range d.Spec.Template.Spec.Containers {
			out = append(out, c.Image)
		}
	}
	if len(out) == 0 {
		t.Fatal("no Deployment among the rendered objects")
	}
	return out
}

// checkImages checks that every Deployment runs image want.
func checkImages(t *testing.T, what, stream, want string) {
	t.Helper()
	for _, got := range images(t, stream) {
		if got != want {
			t.Errorf("%s runs %s, want %s", what, got, want)
		}
	}
}

// makeRelease runs `make release-artefacts` into a fresh folder with extra
// make variables and returns the folder.
func makeRelease(t *testing.T, vars ...string) (string, error) {
	t.Helper()
	tool(t, "helm")
	tool(t, "kustomize")
	dist := t.TempDir()
	out, err := run(t, "make", append([]string{"--no-print-directory", "release-artefacts", "DIST=" + dist}, vars...)...)
	if err != nil {
		return dist, err
	}
	if !strings.Contains(out, "wrote "+dist+"/install.yaml") {
		t.Errorf("make release-artefacts said:\n%s", out)
	}
	return dist, nil
}

// A release's two artefacts install the same image, pinned by the
// release's tag: the bundle names it, and so does the packaged chart by
// default.
func TestReleaseArtefacts(t *testing.T) {
	dist, err := makeRelease(t)
	if err != nil {
		t.Fatalf("make release-artefacts: %v", err)
	}
	version := chartAppVersion(t)
	want := managerImage + ":" + version
	checkRelease(t, dist, want, version)
	if bundle, _ := os.ReadFile(filepath.Join(dist, "install.yaml")); string(bundle) != string(readFile(t, bundleFile)) {
		t.Errorf("the release's install.yaml differs from the committed %s", bundleFile)
	}
}

// checkRelease checks the artefacts a release wrote into dist: the bundle
// and the packaged chart, rendered with its defaults, both run image, and
// the chart archive is version version (without its v), appVersion version,
// and holds the CRDs.
func checkRelease(t *testing.T, dist, image, version string) {
	t.Helper()
	bundle, err := os.ReadFile(filepath.Join(dist, "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checkImages(t, "the release's install.yaml", string(bundle), image)

	chartVersion := strings.TrimPrefix(version, "v")
	pkg := filepath.Join(dist, "friend-deletion-operator-"+chartVersion+".tgz")
	if pkgs, _ := filepath.Glob(filepath.Join(dist, "*.tgz")); len(pkgs) != 1 || pkgs[0] != pkg {
		t.Fatalf("the release wrote chart archives %v, want only %s", pkgs, pkg)
	}
	helm := tool(t, "helm")
	chartYAML, err := run(t, helm, "show", "chart", pkg)
	if err != nil {
		t.Fatalf("helm show chart: %v", err)
	}
	var meta struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal([]byte(chartYAML), &meta); err != nil {
		t.Fatalf("the packaged Chart.yaml: %v", err)
	}
	if meta.Version != chartVersion || meta.AppVersion != version {
		t.Errorf("the packaged chart is version %q, appVersion %q; want %q, %q", meta.Version, meta.AppVersion, chartVersion, version)
	}
	rendered, err := run(t, helm, "template", "fdo", pkg, "--namespace", "ops")
	if err != nil {
		t.Fatalf("helm template %s: %v", pkg, err)
	}
	checkImages(t, "the packaged chart", rendered, image)
	crds, err := run(t, helm, "show", "crds", pkg)
	if err != nil {
		t.Fatalf("helm show crds: %v", err)
	}
	if got := len(decode(t, crds).ofKind("CustomResourceDefinition")); got != 2 {
		t.Errorf("the packaged chart holds %d CRDs, want 2", got)
	}
}

// IMG and VERSION set the image both artefacts name and the chart's
// version; an image not pinned by a version tag is refused.
func TestReleaseImage(t *testing.T) {
	values := readFile(t, chartDir+"/values.yaml")
	for name, tc := range map[string]struct {
		vars           []string
		image, version string
	}{
		"another registry, the release's tag": {
			vars:  []string{"IMG=registry.example.com:5000/im/friend-deletion-operator:v1.2.3", "VERSION=v1.2.3"},
			image: "registry.example.com:5000/im/friend-deletion-operator:v1.2.3", version: "v1.2.3",
		},
		"another registry, a tag of its own": {
			vars:  []string{"IMG=registry.example.com/im/fdo:v1.2.3-hotfix1", "VERSION=v1.2.3"},
			image: "registry.example.com/im/fdo:v1.2.3-hotfix1", version: "v1.2.3",
		},
		"another registry, the chart's appVersion": {
			vars:  []string{"IMG=registry.example.com/im/fdo:" + chartAppVersion(t)},
			image: "registry.example.com/im/fdo:" + chartAppVersion(t), version: chartAppVersion(t),
		},
		"another version": {
			vars:  []string{"VERSION=v2.0.0"},
			image: managerImage + ":v2.0.0", version: "v2.0.0",
		},
	} {
		t.Run(name, func(t *testing.T) {
			dist, err := makeRelease(t, tc.vars...)
			if err != nil {
				t.Fatalf("make release-artefacts %v: %v", tc.vars, err)
			}
			checkRelease(t, dist, tc.image, tc.version)
		})
	}
	for name, img := range map[string]string{
		"no tag":       "registry.example.com:5000/im/friend-deletion-operator",
		"latest":       managerImage + ":latest",
		"digest alone": managerImage + "@sha256:" + strings.Repeat("a", 64),
	} {
		t.Run("refuses "+name, func(t *testing.T) {
			dist, err := makeRelease(t, "IMG="+img)
			if err == nil || !strings.Contains(err.Error(), "pins the image by") {
				t.Errorf("make release-artefacts IMG=%s: error %v, want a refusal", img, err)
			}
			if entries, _ := os.ReadDir(dist); len(entries) != 0 {
				t.Errorf("a refused release wrote %d files", len(entries))
			}
		})
	}
	if after := readFile(t, chartDir+"/values.yaml"); string(after) != string(values) {
		t.Errorf("the releases changed %s/values.yaml", chartDir)
	}
}
