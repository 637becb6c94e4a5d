// Package testenv starts the real kube-apiserver and etcd that the project's
// envtest suites run against, with the project's CRDs installed.
//
// The binaries come from hack/build-control-plane.sh (run by `make test`).
// KUBEBUILDER_ASSETS, or else K8S_ASSETS, names their folder.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Env is a running control plane.
type Env struct {
	// Environment is the envtest environment, for stopping and restarting.
	Environment *envtest.Environment
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a direct (uncached) client with the project's scheme.
	Client client.Client
	// Scheme holds the built-in kinds and the project's.
	Scheme *apiruntime.Scheme
}

// RepoRoot is the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Scheme returns a scheme with the built-in kinds and the project's.
func Scheme() *apiruntime.Scheme {
	s := apiruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := snsv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Start starts etcd and kube-apiserver and installs the CRDs from
// config/crd/bases. Call Stop when done, usually from TestMain.
func Start(opts ...Option) (*Env, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = os.Getenv("K8S_ASSETS")
	}
	if assets == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds kube-apiserver and etcd and sets it")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s is missing from %s: run `make envtest-assets` to build it", bin, assets)
		}
	}
	s := Scheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                s,
	}
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest control plane from %s: %w", assets, err)
	}
	// The suites create many objects quickly; client-go's default of 5 QPS
	// would make them crawl.
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Environment: env, Config: cfg, Client: c, Scheme: s}, nil
}

// Stop stops the control plane.
func (e *Env) Stop() error { return e.Environment.Stop() }

// Option changes the control plane before it starts.
type Option func(*envtest.Environment)

// WithAdmissionPlugins turns on kube-apiserver admission plugins that are
// off by default.
func WithAdmissionPlugins(names ...string) Option {
	return func(e *envtest.Environment) {
		e.ControlPlane.GetAPIServer().Configure().Append("enable-admission-plugins", strings.Join(names, ","))
	}
}

// Run is the body of a TestMain: it starts the control plane, runs the
// package's tests, stops it and exits. set receives the started Env.
func Run(m *testing.M, set func(*Env), opts ...Option) {
	env, err := Start(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	set(env)
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
	}
	os.Exit(code)
}

// Namespace creates a namespace with a generated name for one test and
// deletes it when the test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := e.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = e.Client.Delete(context.Background(), ns)
	})
	return ns.Name
}

// Kubectl runs the kubectl built beside kube-apiserver against this control
// plane as an administrator, and returns what it printed.
func (e *Env) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(e.Environment.BinaryAssetsDirectory, "kubectl")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("kubectl is missing from %s: run `make envtest-assets` to build it", e.Environment.BinaryAssetsDirectory)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, e.Environment.KubeConfig, 0o600); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(t.Context(), bin, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}
