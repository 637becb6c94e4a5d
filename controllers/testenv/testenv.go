// Package testenv starts a real kube-apiserver and etcd with the
// operator's CRDs installed, for tests of the operator and of reconcilers
// written for it in other modules:
//
//	var env *testenv.Env
//
//	func TestMain(m *testing.M) { testenv.Run(m, func(e *testenv.Env) { env = e }) }
//
//	func TestMyStep(t *testing.T) {
//		ns := env.Namespace(t)
//		... // run the operator with manager.Run(ctx, opts, mystep.SetupWithManager)
//	}
//
// Options change the control plane: WithAdmissionPlugins turns on admission
// plugins, WithAuditLog has kube-apiserver write an audit log that
// ReadAuditLog reads back (who asked for what, and the answer).
//
// The binaries are not downloaded: KUBEBUILDER_ASSETS (or K8S_ASSETS) names
// a folder holding kube-apiserver and etcd, such as the one the operator's
// `make envtest-assets` builds into
// ~/.local/share/friend-deletion-operator/k8s/<version>.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/config/crd"
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

// RepoRoot is the top folder of the operator's module source as compiled:
// the repository when built from a clone (the repository's own tools and
// tests use it), the module cache's copy otherwise.
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

// Start starts etcd and kube-apiserver and installs the operator's CRDs
// (compiled in from config/crd/bases). Call Stop when done, usually from
// TestMain; Run does both.
func Start(opts ...Option) (*Env, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = os.Getenv("K8S_ASSETS")
	}
	if assets == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: set it to a folder holding kube-apiserver and etcd (in the operator's repository, `make test` builds them and sets it)")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s is missing from %s: run `make envtest-assets` to build it", bin, assets)
		}
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	s := Scheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDs:                  crds,
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

// WithAuditLog makes kube-apiserver write an audit log to logPath, as
// JSON lines, under the audit policy policyYAML (an
// audit.k8s.io/v1 Policy, written beside the log). ReadAuditLog reads it
// back. The log is written before each response is sent (blocking mode), so
// a request that returned is in it.
func WithAuditLog(logPath string, policyYAML []byte) Option {
	return func(e *envtest.Environment) {
		policyPath := logPath + ".policy.yaml"
		if err := os.WriteFile(policyPath, policyYAML, 0o600); err != nil {
			panic(fmt.Sprintf("testenv: writing the audit policy: %v", err))
		}
		args := e.ControlPlane.GetAPIServer().Configure()
		args.Set("audit-log-path", logPath)
		args.Set("audit-policy-file", policyPath)
		args.Set("audit-log-format", "json")
		args.Set("audit-log-mode", "blocking")
	}
}

// ReadAuditLog decodes the audit events the API server wrote to logPath
// (see WithAuditLog), oldest first.
func ReadAuditLog(logPath string) ([]auditv1.Event, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var events []auditv1.Event
	dec := json.NewDecoder(f)
	for {
		var ev auditv1.Event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return events, nil
			}
			return events, fmt.Errorf("reading audit log %s: %w", logPath, err)
		}
		events = append(events, ev)
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

// CRDs returns the operator's CustomResourceDefinitions.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := fs.Glob(crd.Bases, "bases/*.yaml")
	if err != nil {
		return nil, err
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		data, err := crd.Bases.ReadFile(f)
		if err != nil {
			return nil, err
		}
		c := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(bytes.TrimSpace(data), c); err != nil {
			return nil, fmt.Errorf("reading CRD %s: %w", f, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CRDs compiled in from config/crd/bases")
	}
	return out, nil
}

// Go runs run in the background until the test ends, then cancels its
// context, waits for it to return and fails the test if it returned an
// error. Start the operator with it:
//
//	testenv.Go(t, func(ctx context.Context) error {
//		return manager.Run(ctx, manager.TestOptions(env.Config, ns), mystep.SetupWithManager)
//	})
func Go(t testing.TB, run func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stopped with an error: %v", err)
		}
	})
}
