// Command loadtest-receiver measures the callback receiver against a real
// kube-apiserver: it starts its own envtest control plane, runs the receiver
// in-process on a loopback port exactly as the manager wires it, and sends
// signed Sns.CallbackFriendDelete callbacks.
//
// It reports, in one run:
//   - throughput at a fixed concurrency: callbacks/s and pairs/s end to end,
//     next to raw creates/s of FriendDeletions of the same size sent straight
//     to the same API server (the ceiling), in alternating rounds so that
//     other load on the machine hits both alike;
//   - latency at a fixed rate (open loop: each callback leaves on schedule,
//     however long earlier ones take);
//   - latency of the largest callbacks (2000 pairs);
//   - how many callbacks answered OK are not stored (must be 0).
//
// Run it with `make bench-receiver`, or
// `KUBEBUILDER_ASSETS=<dir with kube-apiserver and etcd> go run ./hack/loadtest-receiver`.
// All traffic stays on 127.0.0.1.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

const (
	appID = "1400000001"
	token = "benchmark-token"
)

type config struct {
	concurrency int
	duration    time.Duration
	rounds      int
	pairs       int
	rate        int
	rateFor     time.Duration
	largePairs  int
	largeCount  int
	tls         bool
	cpuProfile  string
}

func main() {
	var c config
	flag.IntVar(&c.concurrency, "concurrency", 32, "callbacks (and raw creates) in flight at once in the throughput rounds")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "length of each half of a throughput round")
	flag.IntVar(&c.rounds, "rounds", 6, "throughput rounds; each runs raw creates, then callbacks, so that drift in the API server's speed hits both alike")
	flag.IntVar(&c.pairs, "pairs", 1, "pairs per callback in the throughput rounds")
	flag.IntVar(&c.rate, "rate", 100, "callbacks per second in the fixed-rate run (0 skips it)")
	flag.DurationVar(&c.rateFor, "rate-duration", 20*time.Second, "length of the fixed-rate run")
	flag.IntVar(&c.largePairs, "large-pairs", snsv1alpha1.MaxPairs, "pairs per callback in the large-callback run")
	flag.IntVar(&c.largeCount, "large-count", 20, "large callbacks to send, one at a time (0 skips the run)")
	flag.BoolVar(&c.tls, "tls", true, "serve the receiver over HTTPS, as the IM backend calls it")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (load generator and receiver) during the callback rounds to this file")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest-receiver:", err)
		os.Exit(1)
	}
}

// bench is the running setup: control plane, receiver, and clients.
type bench struct {
	cfg      config
	env      *testenv.Env
	raw      client.Client
	http     *http.Client
	base     string // receiver URL up to the path
	ns       string
	seq      atomic.Int64
	ackedMu  sync.Mutex
	acked    []string // request ids answered OK
	failures atomic.Int64
	certDir  string
	stopped  chan struct{} // closed when the manager has stopped
}

func run(c config) error {
	ctrl.SetLogger(funcr.New(func(prefix, args string) {
		if strings.Contains(args, `"error"`) {
			fmt.Fprintln(os.Stderr, prefix, args)
		}
	}, funcr.Options{}))
	fmt.Printf("machine: %d CPUs, %s, load average before start: %s\n", runtime.NumCPU(), runtime.Version(), loadAvg())

	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()

	ctx, cancel := context.WithCancel(context.Background())
	b := &bench{cfg: c, env: env}
	defer func() {
		cancel()
		if b.stopped != nil {
			<-b.stopped
		}
		if b.certDir != "" {
			_ = os.RemoveAll(b.certDir)
		}
	}()
	if err := b.start(ctx); err != nil {
		return err
	}

	fmt.Printf("receiver: %s, write budget %s, %d pairs per callback, concurrency %d\n\n",
		b.base, webhook.DefaultOptions().WriteTimeout, c.pairs, c.concurrency)
	b.throughput(ctx, 200, 8, time.Hour) // warm up connections and caches

	var (
		e2e             []sample
		rawN, cbN       float64
		rawTime, cbTime time.Duration
	)
	for round := 1; round <= c.rounds; round++ {
		created, took, err := b.rawCreates(ctx, round)
		if err != nil {
			return err
		}
		stopProfile := startProfile(c.cpuProfile, round)
		res := b.throughput(ctx, 0, c.concurrency, c.duration)
		stopProfile()
		e2e = append(e2e, res.samples...)
		rawRate, cbRate := float64(created)/took.Seconds(), float64(res.ok)/res.elapsed.Seconds()
		rawN, rawTime, cbN, cbTime = rawN+float64(created), rawTime+took, cbN+float64(res.ok), cbTime+res.elapsed
		fmt.Printf("round %d: raw creates %6.1f/s | callbacks %6.1f/s, %d OK, %d FAIL | ratio %.2f | load %s\n",
			round, rawRate, cbRate, res.ok, res.fail, cbRate/rawRate, loadAvg())
	}
	if c.rounds > 0 {
		rawRate, cbRate := rawN/rawTime.Seconds(), cbN/cbTime.Seconds()
		fmt.Printf("all rounds: raw creates %.1f/s (the ceiling) | callbacks %.1f/s, %.1f pairs/s | end-to-end / ceiling %.2f (target >= 0.80)\n",
			rawRate, cbRate, cbRate*float64(c.pairs), cbRate/rawRate)
		fmt.Printf("callback latency at concurrency %d: %s\n\n", c.concurrency, latencies(e2e))
	}

	if c.rate > 0 {
		raw, err := b.fixedRate(ctx, c.rate, c.rateFor, b.rawSender(ctx, "raw-rate", c.pairs))
		if err != nil {
			return err
		}
		fmt.Printf("fixed rate %d/s for %s, raw creates: latency %s\n", c.rate, c.rateFor, latencies(raw.samples))
		before := receiverHistograms()
		res, _ := b.fixedRate(ctx, c.rate, c.rateFor, func() sample { return b.send(ctx, c.pairs, time.Now()) })
		fmt.Printf("fixed rate %d/s for %s, callbacks: %d sent, %d OK, %d FAIL, latency %s (target p99 < 50ms)\n",
			c.rate, c.rateFor, res.ok+res.fail, res.ok, res.fail, latencies(res.samples))
		fmt.Printf("  as the receiver saw them: %s\n\n", receiverHistograms().since(before, 0.025, 0.05, 0.1))
	}
	if c.largeCount > 0 {
		raw := b.sequence(c.largeCount, b.rawSender(ctx, "raw-large", c.largePairs))
		fmt.Printf("%d-pair objects, raw creates one at a time: latency %s\n", c.largePairs, latencies(raw.samples))
		before := receiverHistograms()
		res := b.sequence(c.largeCount, func() sample { return b.send(ctx, c.largePairs, time.Now()) })
		fmt.Printf("%d-pair callbacks, one at a time: %d OK, %d FAIL, latency %s (target < 300ms)\n",
			c.largePairs, res.ok, res.fail, latencies(res.samples))
		fmt.Printf("  as the receiver saw them: %s\n\n", receiverHistograms().since(before, 0.1, 0.25, 0.5))
	}

	missing, stored, err := b.missing(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("acknowledged callbacks: %d, stored FriendDeletions: %d, missing acknowledged callbacks: %d (must be 0)\n",
		len(b.acked), stored, missing)
	fmt.Printf("load average at the end: %s\n", loadAvg())
	if missing > 0 {
		return fmt.Errorf("%d callbacks answered OK are not stored", missing)
	}
	return nil
}

// start creates the namespace, token Secret and CallbackConfig, and runs a
// manager with the receiver set up as main.go does.
func (b *bench) start(ctx context.Context) error {
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = float32(webhook.DefaultOptions().KubeAPIQPS), webhook.DefaultOptions().KubeAPIBurst
	raw, err := client.New(cfg, client.Options{Scheme: b.env.Scheme})
	if err != nil {
		return err
	}
	b.raw = raw

	b.ns = "loadtest"
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "im-token"}, Data: map[string][]byte{"token": []byte(token)}},
		&snsv1alpha1.CallbackConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: "bench"},
			Spec: snsv1alpha1.CallbackConfigSpec{
				SDKAppID: appID,
				Auth:     &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}},
				Cleanup:  []snsv1alpha1.CleanupStep{{Name: "notify", External: &snsv1alpha1.ExternalStep{}}},
			},
		},
	}
	for _, o := range objs {
		if err := raw.Create(ctx, o); err != nil {
			return err
		}
	}

	addr, probe := freeAddr(), freeAddr()
	opts := webhook.DefaultOptions()
	opts.BindAddress = addr
	scheme := "http"
	var roots *x509.CertPool
	if b.cfg.tls {
		dir, pool, err := selfSignedCert()
		if err != nil {
			return err
		}
		b.certDir = dir
		opts.CertDir, roots, scheme = dir, pool, "https"
	}
	mgr, err := ctrl.NewManager(b.env.Config, ctrl.Options{
		Scheme:                 b.env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: probe,
	})
	if err != nil {
		return err
	}
	if err := webhook.SetupWithManager(mgr, opts); err != nil {
		return err
	}
	b.stopped = make(chan struct{})
	go func() {
		defer close(b.stopped)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if err := waitReady("http://" + probe + "/readyz"); err != nil {
		return err
	}
	b.base = scheme + "://" + addr
	b.http = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots},
			MaxIdleConnsPerHost: 256,
			DisableCompression:  true,
		},
	}
	return nil
}

// sample is one callback's answer and latency.
type sample struct {
	latency time.Duration
	ok      bool
}

type result struct {
	ok, fail int
	elapsed  time.Duration
	samples  []sample
}

// send posts one signed callback with n pairs and returns its latency.
func (b *bench) send(ctx context.Context, n int, requestTime time.Time) sample {
	id := b.seq.Add(1)
	reqID := fmt.Sprintf("bench-%09d", id)
	rt := strconv.FormatInt(requestTime.Unix(), 10)
	sum := sha256.Sum256([]byte(token + rt))
	q := url.Values{
		"SdkAppid": {appID}, "CallbackCommand": {webhook.CallbackCommand}, "contenttype": {"json"},
		"ClientIP": {"127.0.0.1"}, "OptPlatform": {"RESTAPI"}, "RequestTime": {rt},
		"Sign": {hex.EncodeToString(sum[:])}, "RequestId": {reqID},
	}
	body := callbackBody(id, n)
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base+webhook.Path(b.ns, "bench")+"?"+q.Encode(), strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	ok := false
	resp, err := b.http.Do(req)
	if err == nil {
		var a struct{ ActionStatus, ErrorInfo string }
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ok = resp.StatusCode == http.StatusOK && json.Unmarshal(raw, &a) == nil && a.ActionStatus == "OK"
		if !ok {
			err = fmt.Errorf("answered %d %s", resp.StatusCode, raw)
		}
	}
	s := sample{latency: time.Since(start), ok: ok}
	if ok {
		b.ackedMu.Lock()
		b.acked = append(b.acked, reqID)
		b.ackedMu.Unlock()
	} else if b.failures.Add(1) <= 5 {
		fmt.Fprintf(os.Stderr, "callback %s failed: %v\n", reqID, err)
	}
	return s
}

// callbackBody is a body with n distinct pairs of realistic account ids.
func callbackBody(id int64, n int) string {
	var sb strings.Builder
	sb.WriteString(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"From_Account":"user_%09d","To_Account":"friend_%09d_%04d"}`, id, id, i)
	}
	sb.WriteString(`]}`)
	return sb.String()
}

// throughput sends callbacks from workers, each one after the other, until
// count are sent (count > 0) or for d.
func (b *bench) throughput(ctx context.Context, count, workers int, d time.Duration) result {
	var (
		mu    sync.Mutex
		res   result
		wg    sync.WaitGroup
		left  atomic.Int64
		until = time.Now().Add(d)
	)
	left.Store(int64(count))
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []sample
			for time.Now().Before(until) && (count == 0 || left.Add(-1) >= 0) {
				local = append(local, b.send(ctx, b.cfg.pairs, time.Now()))
			}
			mu.Lock()
			res.samples = append(res.samples, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, s := range res.samples {
		if s.ok {
			res.ok++
		} else {
			res.fail++
		}
	}
	return res
}

// rawCreates creates FriendDeletions like the receiver's straight through
// client-go for the round's duration at the same concurrency, in a namespace
// of their own, and returns how many it created in how long.
func (b *bench) rawCreates(ctx context.Context, round int) (int64, time.Duration, error) {
	ns := fmt.Sprintf("raw-%d", round)
	if err := b.raw.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return 0, 0, err
	}
	var (
		wg       sync.WaitGroup
		created  atomic.Int64
		firstErr atomic.Pointer[error]
		seq      atomic.Int64
		until    = time.Now().Add(b.cfg.duration)
	)
	start := time.Now()
	for range b.cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(until) {
				id := seq.Add(1)
				if err := b.raw.Create(ctx, rawObject(ns, id, b.cfg.pairs)); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		return 0, 0, fmt.Errorf("raw create: %w", *err)
	}
	return created.Load(), time.Since(start), nil
}

// rawObject is shaped like the receiver's FriendDeletion for a callback.
func rawObject(ns string, id int64, n int) *snsv1alpha1.FriendDeletion {
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      fmt.Sprintf("fd-raw%021d", id), // as long as the receiver's names
			Labels: map[string]string{
				snsv1alpha1.LabelConfig:   "bench",
				snsv1alpha1.LabelSDKAppID: appID,
				snsv1alpha1.LabelFromHash: snsv1alpha1.FromAccountHash(fmt.Sprintf("user_%09d", id)),
			},
		},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: "bench", SDKAppID: appID, PairCount: int32(n),
			ClientIP: "127.0.0.1", OptPlatform: "RESTAPI", RequestID: fmt.Sprintf("bench-%09d", id),
			ReceivedAt: metav1.Now(),
		},
	}
	for i := range n {
		fd.Spec.Pairs = append(fd.Spec.Pairs, snsv1alpha1.FriendPair{
			From: fmt.Sprintf("user_%09d", id), To: fmt.Sprintf("friend_%09d_%04d", id, i),
		})
	}
	return fd
}

// fixedRate calls send rate times a second for d, each call on its own
// schedule however long earlier ones take.
func (b *bench) fixedRate(ctx context.Context, rate int, d time.Duration, send func() sample) (result, error) {
	var (
		mu  sync.Mutex
		res result
		wg  sync.WaitGroup
	)
	interval := time.Second / time.Duration(rate)
	total := int(d / interval)
	start := time.Now()
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := send()
			mu.Lock()
			res.samples = append(res.samples, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, s := range res.samples {
		if s.ok {
			res.ok++
		} else {
			res.fail++
		}
	}
	return res, ctx.Err()
}

// rawSender creates one FriendDeletion with the given number of pairs per
// call, straight through client-go, in namespace ns, and times it.
func (b *bench) rawSender(ctx context.Context, ns string, pairs int) func() sample {
	if err := b.raw.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		panic(err)
	}
	var seq atomic.Int64
	return func() sample {
		fd := rawObject(ns, seq.Add(1), pairs)
		start := time.Now()
		err := b.raw.Create(ctx, fd)
		return sample{latency: time.Since(start), ok: err == nil}
	}
}

// sequence calls send n times, one after the other.
func (b *bench) sequence(n int, send func() sample) result {
	var res result
	for range n {
		s := send()
		res.samples = append(res.samples, s)
		if s.ok {
			res.ok++
		} else {
			res.fail++
		}
	}
	return res
}

// missing counts the callbacks answered OK whose FriendDeletion the API
// server does not have.
func (b *bench) missing(ctx context.Context) (missing, stored int, err error) {
	have := map[string]bool{}
	var list snsv1alpha1.FriendDeletionList
	opts := []client.ListOption{client.InNamespace(b.ns), client.Limit(500)}
	for {
		if err := b.raw.List(ctx, &list, opts...); err != nil {
			return 0, 0, err
		}
		for _, fd := range list.Items {
			have[fd.Spec.RequestID] = true
		}
		if list.Continue == "" {
			break
		}
		opts = []client.ListOption{client.InNamespace(b.ns), client.Limit(500), client.Continue(list.Continue)}
	}
	for _, id := range b.acked {
		if !have[id] {
			missing++
		}
	}
	return missing, len(have), nil
}

// histograms holds the receiver's own latency histograms, by metric: the
// cumulative count at each upper bound.
type histograms map[string][]bucket

type bucket struct {
	le    float64
	count uint64
}

var histogramNames = map[string]string{
	"friend_deletion_receiver_request_duration_seconds":         "request",
	"friend_deletion_receiver_apiserver_write_duration_seconds": "API server write",
}

// receiverHistograms reads the receiver's histograms from the registry the
// manager's metrics endpoint serves, summing over labels.
func receiverHistograms() histograms {
	out := histograms{}
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range families {
		name, ok := histogramNames[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			for i, b := range m.GetHistogram().GetBucket() {
				if len(out[name]) <= i {
					out[name] = append(out[name], bucket{le: b.GetUpperBound()})
				}
				out[name][i].count += b.GetCumulativeCount()
			}
		}
	}
	return out
}

// since describes what was observed after before: how many observations
// took at most each of the bounds (bucket bounds of the histograms), for
// each histogram.
func (h histograms) since(before histograms, bounds ...float64) string {
	var parts []string
	for _, name := range []string{"request", "API server write"} {
		bs := h[name]
		if len(bs) == 0 {
			continue
		}
		count := func(le float64) (n uint64) {
			for i, b := range bs {
				if b.le == le {
					n = b.count
					if i < len(before[name]) {
						n -= before[name][i].count
					}
				}
			}
			return n
		}
		var within []string
		for _, le := range bounds {
			within = append(within, fmt.Sprintf("%d within %gms", count(le), le*1000))
		}
		parts = append(parts, name+": "+strings.Join(within, ", "))
	}
	return strings.Join(parts, "; ")
}

// startProfile profiles the CPU into path (one file per round) until the
// returned function is called; with no path it does nothing.
func startProfile(path string, round int) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, round))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func latencies(samples []sample) string {
	if len(samples) == 0 {
		return "no samples"
	}
	d := make([]time.Duration, len(samples))
	for i, s := range samples {
		d[i] = s.latency
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	ms := func(x time.Duration) string { return fmt.Sprintf("%.1fms", float64(x.Microseconds())/1000) }
	return fmt.Sprintf("p50 %s, p99 %s, max %s (n=%d)", ms(q(0.50)), ms(q(0.99)), ms(d[len(d)-1]), len(d))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(url string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("the receiver did not become ready in 2 minutes")
}

// selfSignedCert writes tls.crt and tls.key for 127.0.0.1 into a new folder.
func selfSignedCert() (string, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "callback-receiver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "loadtest-receiver-")
	if err != nil {
		return "", nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, webhook.CertFile), certPEM, 0o600); err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, webhook.KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return dir, pool, nil
}
