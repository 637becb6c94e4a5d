package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	bolt "go.etcd.io/bbolt"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// The process drills run the receiver as a process of its own, this test
// binary started again with receiverProcessEnv set, so that it can be
// killed with SIGKILL or stopped with SIGTERM as a pod is.

// receiverProcessEnv, when set, makes the test binary run a receiver
// process (runReceiverProcess) instead of the tests. The other settings
// come in the variables below.
const (
	receiverProcessEnv = "FDO_TEST_RECEIVER_PROCESS"
	envKubeconfig      = "FDO_TEST_KUBECONFIG"
	envBind            = "FDO_TEST_BIND"
	envProbe           = "FDO_TEST_PROBE"
	envSpoolDir        = "FDO_TEST_SPOOL_DIR"
	envReplica         = "FDO_TEST_REPLICA"
	envShutdownDelay   = "FDO_TEST_SHUTDOWN_DELAY"
	// envMetrics is the metrics endpoint's address; unset turns it off.
	envMetrics = "FDO_TEST_METRICS"
)

// runReceiverProcess is a receiver process as main.go runs it: a manager
// with the receiver, stopped by SIGTERM through controller-runtime's signal
// handler. It returns the exit code.
func runReceiverProcess() int {
	ctrl.SetLogger(testLogs)
	if os.Getenv(envSpoolWriteLimit) != "" {
		limitSpoolWritesOnSignal()
	}
	metricsAddr := os.Getenv(envMetrics)
	if metricsAddr == "" {
		metricsAddr = "0"
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv(envKubeconfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver process:", err)
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: os.Getenv(envProbe),
		Logger:                 testLogs,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver process:", err)
		return 1
	}
	opts := DefaultOptions()
	opts.BindAddress = os.Getenv(envBind)
	opts.SpoolDir = os.Getenv(envSpoolDir)
	opts.ReplicaName = os.Getenv(envReplica)
	opts.StatusFlushInterval = 500 * time.Millisecond
	if opts.ShutdownDelay, err = time.ParseDuration(os.Getenv(envShutdownDelay)); err != nil {
		fmt.Fprintln(os.Stderr, "receiver process:", err)
		return 1
	}
	if err := SetupWithManager(mgr, opts); err != nil {
		fmt.Fprintln(os.Stderr, "receiver process:", err)
		return 1
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, "receiver process:", err)
		return 1
	}
	return 0
}

// writeKubeconfig writes a kubeconfig for cfg's server and credentials.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// receiverProcess is one running receiver process.
type receiverProcess struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	base   string // http://host:port of the receiver
	probe  string // host:port of /readyz
	log    string
	exited chan struct{}
	err    error
}

func startReceiverProcess(t *testing.T, name, kubeconfig, spoolDir string, shutdownDelay time.Duration) *receiverProcess {
	t.Helper()
	return startReceiverProcessEnv(t, name, kubeconfig, spoolDir, shutdownDelay, nil)
}

// startReceiverProcessEnv is startReceiverProcess with more variables in
// the process's environment. With any, the process's output reaches its
// log through a pipe, which a file size limit set in the process (see
// envSpoolWriteLimit) does not cut short.
func startReceiverProcessEnv(t *testing.T, name, kubeconfig, spoolDir string, shutdownDelay time.Duration, extraEnv []string) *receiverProcess {
	t.Helper()
	p := &receiverProcess{t: t, name: name, probe: freeAddr(t), exited: make(chan struct{})}
	bind := freeAddr(t)
	p.base = "http://" + bind
	p.log = filepath.Join(t.TempDir(), name+".log")
	out, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = append(os.Environ(),
		receiverProcessEnv+"=1", envKubeconfig+"="+kubeconfig, envBind+"="+bind, envProbe+"="+p.probe,
		envSpoolDir+"="+spoolDir, envReplica+"="+name, envShutdownDelay+"="+shutdownDelay.String())
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if len(extraEnv) > 0 {
		w := struct{ io.Writer }{out} // not an *os.File: exec copies through a pipe
		p.cmd.Stdout, p.cmd.Stderr = w, w
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		out.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("receiver process %s output:\n%s", name, b)
		}
	})
	return p
}

// ready reports whether the process's readiness endpoint answers 200.
func (p *receiverProcess) ready(hc *http.Client) bool {
	resp, err := hc.Get("http://" + p.probe + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (p *receiverProcess) waitReady() {
	p.t.Helper()
	hc := &http.Client{Timeout: time.Second}
	NewWithT(p.t).Eventually(func() bool { return p.ready(hc) }).
		WithTimeout(time.Minute).WithPolling(50*time.Millisecond).Should(BeTrue(), "receiver process %s never became ready", p.name)
}

func (p *receiverProcess) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// wait waits for the process to exit and returns its exit error.
func (p *receiverProcess) wait() error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(time.Minute):
		p.t.Fatalf("receiver process %s did not exit", p.name)
		return nil
	}
}

// warmUp sends callbacks until one is answered OK, which means the
// process's cache holds the config.
func warmUp(t *testing.T, send func(id string) (reply, error), id string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		r, err := send(id)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(r.raw).To(Equal(okAnswer))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// TestDrillKilledWithSpooledCallbacks kills the receiver with SIGKILL while
// its spool holds callbacks the unreachable API server never got, then
// starts a new process on the same spool once the API server is back: it
// stores every spooled callback, once.
func TestDrillKilledWithSpooledCallbacks(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns, h, proxy, kubeconfig, spoolDir := processDrill(t)

	first := startReceiverProcess(t, "receiver-0", kubeconfig, spoolDir, 0)
	first.waitReady()
	send := callbackSender(imBackend(), func() string { return first.base }, ns)
	warmUp(t, send, "warm-up")

	proxy.refuse()
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("cb-%03d", i))
	}
	ok := expectAllOK(t, send, ids, "while the API server is unreachable")
	ok["warm-up"] = true
	g.Expect(h.deletions()).To(HaveLen(1), "only the warm-up reached the API server")

	first.signal(syscall.SIGKILL)
	err := first.wait()
	var exit *exec.ExitError
	g.Expect(errors.As(err, &exit)).To(BeTrue())
	g.Expect(exit.Sys().(syscall.WaitStatus).Signal()).To(Equal(syscall.SIGKILL))

	proxy.heal()
	second := startReceiverProcess(t, "receiver-0", kubeconfig, spoolDir, 0)
	expectStoredOnce(t, ns, ok, time.Minute)
	second.waitReady()
	second.signal(syscall.SIGTERM)
	g.Expect(second.wait()).To(Succeed())
	checkSpoolFile(t, spoolDir)
	g.Expect(h.deletions()).To(HaveLen(len(ok)))
}

// roundRobin is a load balancer in front of receiver processes that, as
// endpoints do, sends new requests only to the ones whose readiness passes,
// polling it every 100 ms.
type roundRobin struct {
	mu       sync.Mutex
	backends []*receiverProcess
	ready    map[*receiverProcess]bool
	next     atomic.Uint64
	proxies  sync.Map // base URL -> *httputil.ReverseProxy
	stop     chan struct{}
	done     chan struct{}
}

func newRoundRobin(backends ...*receiverProcess) *roundRobin {
	lb := &roundRobin{backends: backends, ready: map[*receiverProcess]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go lb.poll()
	return lb
}

func (lb *roundRobin) poll() {
	defer close(lb.done)
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		lb.mu.Lock()
		backends := append([]*receiverProcess(nil), lb.backends...)
		lb.mu.Unlock()
		for _, b := range backends {
			ok := b.ready(hc)
			lb.mu.Lock()
			lb.ready[b] = ok
			lb.mu.Unlock()
		}
		select {
		case <-lb.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// replace puts next in old's place; next gets requests once it is ready.
func (lb *roundRobin) replace(old, next *receiverProcess) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for i, b := range lb.backends {
		if b == old {
			lb.backends[i] = next
		}
	}
	delete(lb.ready, old)
}

func (lb *roundRobin) readyCount() int {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	n := 0
	for _, b := range lb.backends {
		if lb.ready[b] {
			n++
		}
	}
	return n
}

func (lb *roundRobin) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	lb.mu.Lock()
	var ready []*receiverProcess
	for _, b := range lb.backends {
		if lb.ready[b] {
			ready = append(ready, b)
		}
	}
	lb.mu.Unlock()
	if len(ready) == 0 {
		http.Error(w, "no ready receiver", http.StatusServiceUnavailable)
		return
	}
	b := ready[lb.next.Add(1)%uint64(len(ready))]
	rp, _ := lb.proxies.LoadOrStore(b.base, &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		u, _ := url.Parse(b.base)
		r.SetURL(u)
	}})
	rp.(*httputil.ReverseProxy).ServeHTTP(w, req)
}

func (lb *roundRobin) close() {
	close(lb.stop)
	<-lb.done
}

// TestDrillRollingRestart replaces each of two receiver processes in turn,
// with SIGTERM, while callbacks arrive at 50/s through a round-robin
// balancer that stops routing to a receiver once its readiness fails. No
// callback is answered anything but OK, and every one is stored once.
func TestDrillRollingRestart(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns := env.Namespace(t)
	h := &harness{t: t, env: env, mgr: shared, ns: ns}
	h.config("plain", nil)
	kubeconfig := writeKubeconfig(t, env.Config)
	// Longer than the balancer takes to notice, as the default 5 s is
	// longer than endpoints take.
	const delay = time.Second

	start := func(name string) *receiverProcess {
		p := startReceiverProcess(t, name, kubeconfig, t.TempDir(), delay)
		p.waitReady()
		warmUp(t, callbackSender(imBackend(), func() string { return p.base }, ns), "warm-up-"+name)
		return p
	}
	a, b := start("receiver-a"), start("receiver-b")
	lb := newRoundRobin(a, b)
	defer lb.close()
	g.Eventually(lb.readyCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(Equal(2))
	srv := &http.Server{Handler: lb}
	lbAddr := freeAddr(t)
	ln, err := listen(lbAddr)
	g.Expect(err).NotTo(HaveOccurred())
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	l := startLoad(t, 50, callbackSender(imBackend(), func() string { return "http://" + lbAddr }, ns))
	roll := func(old *receiverProcess, name string) {
		before := l.okCount()
		g.Eventually(l.okCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(BeNumerically(">=", before+50))
		old.signal(syscall.SIGTERM)
		g.Expect(old.wait()).To(Succeed(), "%s exits cleanly on SIGTERM", old.name)
		next := start(name)
		lb.replace(old, next)
		g.Eventually(lb.readyCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(Equal(2))
	}
	roll(a, "receiver-c")
	roll(b, "receiver-d")
	before := l.okCount()
	g.Eventually(l.okCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(BeNumerically(">=", before+50))
	l.finish()

	l.logSlowest()
	g.Expect(l.failed).To(BeEmpty(), "callbacks failed during the rolling restart")
	expectStoredOnce(t, ns, l.ok, time.Minute)
	t.Logf("%d callbacks through two rolling restarts, %d answered OK", len(l.sent), len(l.ok))
}

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// spooledRequestIDs counts the request ids of the entries waiting in the
// spool in dir, read from its file with no receiver holding it.
func spooledRequestIDs(t *testing.T, dir string) map[string]int {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, SpoolFile), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ids := map[string]int{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
			var e spoolEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			ids[e.Object.Spec.RequestID]++
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestDrillSIGTERMDuringOutage stops the receiver with SIGTERM while its
// connection to the API server is cut and callbacks keep arriving, so that
// some are in flight when the signal comes and more arrive during the
// shutdown delay. None that reaches it is answered FAIL (those sent once
// its port closed are refused a connection, which a load balancer that has
// dropped the pod never sends). Every callback answered OK, before or after
// the signal, is in the spool the process leaves (nothing answered OK is
// left unspooled), once; after the connection heals, a new process on the
// same spool stores each of them exactly once.
func TestDrillSIGTERMDuringOutage(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns, h, proxy, kubeconfig, spoolDir := processDrill(t)

	first := startReceiverProcess(t, "receiver-0", kubeconfig, spoolDir, time.Second)
	first.waitReady()
	base := func() string { return first.base }
	warmUp(t, callbackSender(imBackend(), base, ns), "warm-up")
	g.Expect(h.deletions()).To(HaveLen(1))

	proxy.refuse()
	// Each callback now waits for the API server for --receiver-spool-after
	// before it is spooled, so at 20/s a score are in flight at any time.
	l := startLoad(t, 20, callbackSender(imBackend(), base, ns))
	g.Eventually(l.okCount).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(BeNumerically(">=", 10))
	sentBefore := l.seq.Load()
	first.signal(syscall.SIGTERM)
	l.mu.Lock()
	answeredAtSignal, okAtSignal := len(l.sent), len(l.ok)
	l.mu.Unlock()
	g.Expect(first.wait()).To(Succeed(), "the receiver exits cleanly on SIGTERM")
	l.finish()

	l.logSlowest()
	inFlight := int(sentBefore) - answeredAtSignal
	okAfter := len(l.ok) - okAtSignal
	t.Logf("%d callbacks sent, %d answered OK (%d after SIGTERM), %d in flight at SIGTERM, %d not answered OK (sent once the port closed)",
		len(l.sent), len(l.ok), okAfter, inFlight, len(l.failed))
	g.Expect(inFlight).To(BeNumerically(">", 0), "callbacks were in flight when SIGTERM came")
	g.Expect(okAfter).To(BeNumerically(">", 0), "callbacks were answered OK during the shutdown")
	g.Expect(l.answeredFail).To(BeEmpty(), "a callback that reached the receiver during its shutdown was answered FAIL")

	checkSpoolFile(t, spoolDir)
	spooled := spooledRequestIDs(t, spoolDir)
	var unspooled, twice []string
	for id := range l.ok {
		switch spooled[id] {
		case 0:
			unspooled = append(unspooled, id)
		case 1:
		default:
			twice = append(twice, id)
		}
	}
	g.Expect(unspooled).To(BeEmpty(), "answered OK, yet neither stored (the API server was cut) nor spooled")
	g.Expect(twice).To(BeEmpty(), "spooled twice")
	g.Expect(h.deletions()).To(HaveLen(1), "only the warm-up reached the API server")

	replayOnRestart(t, ns, proxy, kubeconfig, spoolDir, l.ok)
	g.Expect(h.deletions()).To(HaveLen(len(l.ok)))
}

// processDrill sets up a drill of receiver processes: a namespace with a
// plain config, a fault proxy in front of the API server, a kubeconfig
// through it, and a spool folder.
func processDrill(t *testing.T) (ns string, h *harness, proxy *faultProxy, kubeconfig, spoolDir string) {
	t.Helper()
	ns = env.Namespace(t)
	h = &harness{t: t, env: env, mgr: shared, ns: ns}
	h.config("plain", nil)
	proxy = newFaultProxy(t, upstreamAddr(t, env))
	kubeconfig = writeKubeconfig(t, proxiedConfig(t, env, proxy))
	return ns, h, proxy, kubeconfig, t.TempDir()
}

// replayOnRestart heals the proxy and starts a new receiver process on the
// spool: every callback in ok (and the drill's warm-up, added to ok) is
// stored exactly once, and the process, stopped, leaves a sound, empty
// spool.
func replayOnRestart(t *testing.T, ns string, proxy *faultProxy, kubeconfig, spoolDir string, ok map[string]bool) {
	t.Helper()
	g := NewWithT(t)
	proxy.heal()
	second := startReceiverProcess(t, "receiver-0", kubeconfig, spoolDir, 0)
	ok["warm-up"] = true
	expectStoredOnce(t, ns, ok, time.Minute)
	second.waitReady()
	second.signal(syscall.SIGTERM)
	g.Expect(second.wait()).To(Succeed())
	checkSpoolFile(t, spoolDir)
	g.Expect(spooledRequestIDs(t, spoolDir)).To(BeEmpty(), "the spool is empty once replayed")
}
