// Package cluster runs a local Kubernetes cluster from the binaries that
// hack/build-control-plane.sh builds: etcd and kube-apiserver (through
// controller-runtime's envtest control plane), kube-controller-manager,
// kube-scheduler, and kwok with one fake node. Jobs and Pods go through the
// real Job controller, garbage collector and scheduler; kwok plays the
// kubelet, so no container runtime is needed and no container runs.
//
// Start brings it up and waits until it can run a Pod; Stop stops every
// process Start started. Both `make run` (hack/localcluster) and the
// end-to-end tests (test/e2e) use it.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// DefaultNodeName is the fake node's name unless Options.NodeName says
// otherwise.
const DefaultNodeName = "kwok-node-0"

// kwokNodeAnnotation marks the nodes kwok manages; kwok runs with
// --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake.
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

// Binaries are the programs the local cluster needs in Options.AssetsDir.
// kubectl is not run by the cluster itself but by everything around it.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"}

// Options configure Start.
type Options struct {
	// AssetsDir holds the binaries (see Binaries). Empty means $K8S_ASSETS.
	AssetsDir string

	// Dir is the cluster's own folder: the admin kubeconfig, logs, etcd's
	// data and the certificates. Start clears what an earlier run left
	// there (only the files and folders it writes itself). Required.
	Dir string

	// APIServerPort is kube-apiserver's port on 127.0.0.1; 0 picks a free
	// one.
	APIServerPort int

	// NodeName is the fake node's name; empty means DefaultNodeName.
	NodeName string

	// Out receives one progress line per step; nil discards them.
	Out io.Writer

	// ReadyTimeout bounds each wait for a component to become ready;
	// 0 means two minutes.
	ReadyTimeout time.Duration

	// EtcdFsync runs etcd with fsync on, as production clusters do. By
	// default (false) etcd runs with --unsafe-no-fsync, as envtest starts
	// it: faster, and nothing the local cluster holds needs to survive a
	// power cut.
	EtcdFsync bool
}

// Cluster is a running local cluster.
type Cluster struct {
	// Dir is the cluster's folder (absolute).
	Dir string
	// AssetsDir holds the binaries.
	AssetsDir string
	// KubeconfigPath is the admin kubeconfig (cluster-admin through the
	// system:masters group).
	KubeconfigPath string
	// Config reaches the API server as the admin.
	Config *rest.Config
	// NodeName is the fake node's name.
	NodeName string

	out      io.Writer
	timeout  time.Duration
	plane    *envtest.ControlPlane
	logs     []*os.File
	procs    []*Process
	lock     *os.File
	client   kubernetes.Interface
	stopOnce sync.Once
	stopErr  error
}

// Start brings up the local cluster and returns once a Pod can be created and
// scheduled onto the fake node. On error nothing it started is left running.
func Start(ctx context.Context, opts Options) (_ *Cluster, retErr error) {
	began := time.Now()
	if opts.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	assets := opts.AssetsDir
	if assets == "" {
		assets = os.Getenv("K8S_ASSETS")
	}
	if assets == "" {
		return nil, errors.New("K8S_ASSETS is not set: it names the folder of the control-plane binaries; run through make (make run, make test-e2e), which sets it, or run `make control-plane` and export K8S_ASSETS")
	}
	c := &Cluster{
		Dir:       dir,
		AssetsDir: assets,
		NodeName:  opts.NodeName,
		out:       opts.Out,
		timeout:   opts.ReadyTimeout,
	}
	if c.NodeName == "" {
		c.NodeName = DefaultNodeName
	}
	if c.out == nil {
		c.out = io.Discard
	}
	if c.timeout == 0 {
		c.timeout = 2 * time.Minute
	}
	defer func() {
		if retErr != nil {
			_ = c.Stop()
		}
	}()

	steps := []struct {
		what string
		run  func(context.Context) error
	}{
		{"checking binaries and " + relOrAbs(dir), func(context.Context) error { return c.prepare(opts.APIServerPort) }},
		{"starting etcd (" + fsyncWord(opts.EtcdFsync) + ") and kube-apiserver", func(ctx context.Context) error {
			return c.startAPIServer(ctx, opts.APIServerPort, opts.EtcdFsync)
		}},
		{"starting kube-controller-manager", c.startControllerManager},
		{"starting kube-scheduler", c.startScheduler},
		{"starting kwok", c.startKwok},
		{"registering fake node " + c.NodeName + " and waiting for it to be Ready", c.addNode},
		{"waiting for the default ServiceAccount (Pods need it)", c.waitForDefaultServiceAccount},
	}
	for i, s := range steps {
		fmt.Fprintf(c.out, "[%d/%d] %s ...\n", i+1, len(steps), s.what)
		stepBegan := time.Now()
		if err := s.run(ctx); err != nil {
			return nil, err
		}
		if d := time.Since(stepBegan); d >= 100*time.Millisecond {
			fmt.Fprintf(c.out, "      done in %s\n", d.Round(100*time.Millisecond))
		}
	}
	fmt.Fprintf(c.out, "local cluster ready in %s (kubeconfig %s)\n", time.Since(began).Round(100*time.Millisecond), relOrAbs(c.KubeconfigPath))
	return c, nil
}

// fsyncWord says how etcd writes to disk.
func fsyncWord(on bool) string {
	if on {
		return "fsync on"
	}
	return "fsync off"
}

// prepare checks the binaries and the API server's port, takes the folder's
// lock, stops what a crashed run from the same folder left running, and
// clears the state of the previous run.
func (c *Cluster) prepare(apiServerPort int) error {
	var missing []string
	for _, b := range Binaries {
		if fi, err := os.Stat(filepath.Join(c.AssetsDir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s missing from %s: run `make control-plane` to build the local cluster's binaries (a cold build takes about 15 minutes)", strings.Join(missing, ", "), c.AssetsDir)
	}
	if apiServerPort != 0 {
		if err := checkPortFree("kube-apiserver", apiServerPort); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	lock, err := lockDir(c.Dir)
	if err != nil {
		return err
	}
	c.lock = lock
	stopLeftovers(c.Dir, c.AssetsDir, c.out)
	for _, p := range []string{"etcd", "apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "logs", "kubeconfig"} {
		if err := os.RemoveAll(filepath.Join(c.Dir, p)); err != nil {
			return err
		}
	}
	for _, p := range []string{"apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "logs"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, p), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startAPIServer(ctx context.Context, port int, etcdFsync bool) error {
	etcdLog, err := c.logFile("etcd")
	if err != nil {
		return err
	}
	apiLog, err := c.logFile("kube-apiserver")
	if err != nil {
		return err
	}
	api := &envtest.APIServer{
		Path:         filepath.Join(c.AssetsDir, "kube-apiserver"),
		CertDir:      filepath.Join(c.Dir, "apiserver"),
		StartTimeout: c.timeout,
		StopTimeout:  15 * time.Second,
		Out:          apiLog,
		Err:          apiLog,
	}
	if port != 0 {
		api.SecureServing.ListenAddr = envtest.ListenAddr{Address: "127.0.0.1", Port: strconv.Itoa(port)}
	}
	// envtest turns the ServiceAccount admission plugin off because it runs
	// no controllers. This cluster runs them, so keep the real default: a Pod
	// is admitted only once its namespace's ServiceAccount exists.
	api.Configure().Disable("disable-admission-plugins")
	c.plane = &envtest.ControlPlane{
		Etcd: &envtest.Etcd{
			Path:         filepath.Join(c.AssetsDir, "etcd"),
			DataDir:      filepath.Join(c.Dir, "etcd"),
			StartTimeout: c.timeout,
			StopTimeout:  15 * time.Second,
			Out:          etcdLog,
			Err:          etcdLog,
		},
		APIServer: api,
	}
	if etcdFsync {
		// envtest adds --unsafe-no-fsync=true unless the flag is set.
		c.plane.Etcd.Configure().Set("unsafe-no-fsync", "false")
	}
	if err := c.plane.Start(); err != nil {
		return fmt.Errorf("starting etcd and kube-apiserver (logs in %s): %w\n%s", filepath.Join(c.Dir, "logs"), err, tailFile(apiLog.Name(), 15))
	}

	admin, err := c.plane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	c.Config = admin.Config()
	c.Config.QPS, c.Config.Burst = 100, 200
	c.KubeconfigPath = filepath.Join(c.Dir, "kubeconfig")
	if err := writeKubeconfig(c.KubeconfigPath, c.Config, "admin"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "apiserver", "ca.crt"), c.Config.CAData, 0o644); err != nil {
		return err
	}
	c.client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	return c.waitFor(ctx, "kube-apiserver /readyz and the default namespace", func(ctx context.Context) error {
		body, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("/readyz: %w: %s", err, body)
		}
		_, err = c.client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	p := &Process{
		Name: "kube-controller-manager",
		Path: filepath.Join(c.AssetsDir, "kube-controller-manager"),
		Args: []string{
			"--kubeconfig=" + c.KubeconfigPath,
			// The token controller needs the service-account signing key,
			// which only the API server has; tokens come from the
			// TokenRequest API instead.
			"--controllers=*,-serviceaccount-token",
			"--leader-elect=false",
			"--root-ca-file=" + filepath.Join(c.Dir, "apiserver", "ca.crt"),
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(c.Dir, "kube-controller-manager"),
		},
		LogPath: filepath.Join(c.Dir, "logs", "kube-controller-manager.log"),
	}
	if err := c.startProcess(p); err != nil {
		return err
	}
	return c.waitFor(ctx, "kube-controller-manager /healthz", healthCheck(fmt.Sprintf("https://127.0.0.1:%d/healthz", port)))
}

func (c *Cluster) startScheduler(ctx context.Context) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	p := &Process{
		Name: "kube-scheduler",
		Path: filepath.Join(c.AssetsDir, "kube-scheduler"),
		Args: []string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(c.Dir, "kube-scheduler"),
		},
		LogPath: filepath.Join(c.Dir, "logs", "kube-scheduler.log"),
	}
	if err := c.startProcess(p); err != nil {
		return err
	}
	return c.waitFor(ctx, "kube-scheduler /readyz", healthCheck(fmt.Sprintf("https://127.0.0.1:%d/readyz", port)))
}

func (c *Cluster) startKwok(ctx context.Context) error {
	stages, err := stagesYAML()
	if err != nil {
		return err
	}
	stagesPath := filepath.Join(c.Dir, "kwok", "stages.yaml")
	if err := os.WriteFile(stagesPath, stages, 0o644); err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	p := &Process{
		Name: "kwok",
		Path: filepath.Join(c.AssetsDir, "kwok"),
		Args: []string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--config=" + stagesPath,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
			// Pod and node addresses are only labels: nothing ever
			// connects to them.
			"--cidr=10.0.0.1/24",
			"--node-ip=10.0.0.1",
			// Renew the node's Lease as a kubelet does, so the node
			// lifecycle controller keeps the node Ready.
			"--node-lease-duration-seconds=40",
			"--server-address=127.0.0.1:" + strconv.Itoa(port),
		},
		// kwok reads its own configuration from $HOME/.kwok; keep it in
		// the cluster's folder.
		Env:     append(os.Environ(), "HOME="+filepath.Join(c.Dir, "kwok")),
		LogPath: filepath.Join(c.Dir, "logs", "kwok.log"),
	}
	if err := c.startProcess(p); err != nil {
		return err
	}
	return c.waitFor(ctx, "kwok /healthz", healthCheck(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)))
}

func (c *Cluster) addNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        c.NodeName,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": c.NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
		},
	}
	if _, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", c.NodeName, err)
	}
	return c.waitFor(ctx, "node "+c.NodeName+" Ready and untainted", func(ctx context.Context) error {
		n, err := c.client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(n) {
			return errors.New("not Ready yet")
		}
		// The node lifecycle controller taints a new node not-ready until
		// it sees it Ready; the scheduler skips it until then.
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return fmt.Errorf("still tainted %s:%s", t.Key, t.Effect)
			}
		}
		return nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *Cluster) waitForDefaultServiceAccount(ctx context.Context) error {
	return c.WaitForServiceAccount(ctx, metav1.NamespaceDefault)
}

// WaitForServiceAccount waits until the namespace's default ServiceAccount
// exists: until then the API server refuses Pods there.
func (c *Cluster) WaitForServiceAccount(ctx context.Context, namespace string) error {
	return c.waitFor(ctx, "ServiceAccount "+namespace+"/default", func(ctx context.Context) error {
		_, err := c.client.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// Stop stops every process the cluster started, newest first, and removes
// etcd's data. Logs and the kubeconfig stay in Dir. It is safe to call more
// than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		for i := len(c.procs) - 1; i >= 0; i-- {
			if err := c.procs[i].Stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if c.plane != nil {
			if err := c.plane.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping kube-apiserver and etcd: %w", err))
			}
		}
		for _, f := range c.logs {
			_ = f.Close()
		}
		if c.plane != nil {
			_ = os.RemoveAll(filepath.Join(c.Dir, "etcd"))
		}
		if c.lock != nil {
			_ = c.lock.Close()
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// EtcdURL is etcd's client URL (plain HTTP on 127.0.0.1), which also
// serves etcd's /metrics.
func (c *Cluster) EtcdURL() string {
	if c.plane == nil || c.plane.Etcd == nil || c.plane.Etcd.URL == nil {
		return ""
	}
	return c.plane.Etcd.URL.String()
}

// KubectlPath is the kubectl built with the cluster's binaries.
func (c *Cluster) KubectlPath() string { return filepath.Join(c.AssetsDir, "kubectl") }

// Kubectl returns a kubectl command acting as the admin.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, c.KubectlPath(), append([]string{"--kubeconfig=" + c.KubeconfigPath}, args...)...)
}

// WriteTokenKubeconfig writes, into the cluster's folder, a kubeconfig that
// reaches the API server with a bearer token (for example a ServiceAccount's
// from `kubectl create token`), and returns its path.
func (c *Cluster) WriteTokenKubeconfig(name, token string) (string, error) {
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = token
	path := filepath.Join(c.Dir, name+".kubeconfig")
	return path, writeKubeconfig(path, cfg, name)
}

func (c *Cluster) startProcess(p *Process) error {
	if err := p.Start(); err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *Cluster) logFile(name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(c.Dir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	c.logs = append(c.logs, f)
	return f, nil
}

// waitFor polls check until it returns nil. It gives up when a process the
// cluster started exits, when ctx ends, or after the ready timeout.
func (c *Cluster) waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	var last error
	for {
		checkCtx, cancelCheck := context.WithTimeout(ctx, 5*time.Second)
		last = check(checkCtx)
		cancelCheck()
		if last == nil {
			return nil
		}
		for _, p := range c.procs {
			if done, _ := p.Exited(); done {
				return fmt.Errorf("waiting for %s: %w", what, p.ExitError())
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready after %s (logs in %s): %w", what, c.timeout, filepath.Join(c.Dir, "logs"), last)
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// healthCheck returns a check that GETs a component's health endpoint on
// 127.0.0.1. The components serve self-signed certificates, so they are not
// verified.
func healthCheck(url string) func(context.Context) error {
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health check of a self-signed local component
	}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
		}
		return nil
	}
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// checkPortFree reports a clear error when something already listens on the
// port at 127.0.0.1.
func checkPortFree(what string, port int) error {
	return CheckAddrFree(what, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// CheckAddrFree reports a clear error when the address (host:port, an empty
// host meaning every interface) cannot be listened on, usually because
// another program holds it.
func CheckAddrFree(what, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("port %s for %s is taken (%w): stop what listens there (`ss -ltnp | grep %s` shows it) or choose another port", addr, what, err, portOf(addr))
	}
	return l.Close()
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return ":" + port
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context.
func writeKubeconfig(path string, cfg *rest.Config, user string) error {
	const name = "friend-deletion-local"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	kc.CurrentContext = name
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// relOrAbs shows path relative to the working folder when it is inside it.
func relOrAbs(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil || len(rel) >= 2 && rel[:2] == ".." {
		return path
	}
	return rel
}
