package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// The package's shared control plane and a started manager whose cache the
// receivers under test read from, as they do in the operator.
var (
	env      *testenv.Env
	shared   ctrl.Manager
	testLogs = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
)

// The signed-callback test vector from Tencent's documentation.
const (
	vectorToken       = "xxxxyyyy"
	vectorRequestTime = "1669872112"
	vectorSign        = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
)

// testAppID is the SDKAppID of the test configs.
const testAppID = "1400000001"

func TestMain(m *testing.M) {
	if os.Getenv(receiverProcessEnv) != "" {
		os.Exit(runReceiverProcess())
	}
	flag.Parse()
	if !needsControlPlane() {
		os.Exit(m.Run())
	}
	ctrl.SetLogger(testLogs)
	e, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	env = e
	ctx, cancel := context.WithCancel(context.Background())
	mgr, stopped, err := startManager(ctx, env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the test manager:", err)
		cancel()
		_ = env.Stop()
		os.Exit(1)
	}
	shared = mgr
	code := m.Run()
	cancel()
	<-stopped
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
	}
	os.Exit(code)
}

// needsControlPlane is false when the run executes no test, as when listing
// tests or fuzzing: neither needs kube-apiserver.
func needsControlPlane() bool {
	get := func(name string) string {
		if f := flag.Lookup(name); f != nil {
			return f.Value.String()
		}
		return ""
	}
	return get("test.list") == "" && get("test.fuzz") == "" && get("test.fuzzworker") != "true" && get("test.run") != "^$"
}

// startManager starts a manager on e whose cache holds CallbackConfigs and
// Secrets; stopped is closed when it has stopped after ctx ends.
func startManager(ctx context.Context, e *testenv.Env) (ctrl.Manager, <-chan struct{}, error) {
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 testLogs,
	})
	if err != nil {
		return nil, nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "test manager:", err)
		}
	}()
	for _, obj := range []client.Object{&snsv1alpha1.CallbackConfig{}, &corev1.Secret{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return nil, nil, err
		}
	}
	return mgr, stopped, nil
}

// requireEnv skips a test that needs the control plane when the run did not
// start one.
func requireEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("no control plane in this run")
	}
}

// fixedNow is the test clock's time: five seconds after the test vector's
// RequestTime.
var fixedNow = time.Unix(1669872117, 0)

// harness is one receiver under test, served over a real loopback socket,
// reading through the shared manager's cache and writing to the API server.
type harness struct {
	t        *testing.T
	env      *testenv.Env
	mgr      ctrl.Manager
	ns       string
	recv     *Receiver
	srv      *httptest.Server
	clock    *clocktesting.FakePassiveClock
	registry *prometheus.Registry
	logs     *logRecorder
	http     *http.Client
}

type harnessOption func(*Options)

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	requireEnv(t)
	return newHarnessOn(t, env, shared, opts...)
}

// newHarnessOn is newHarness on another control plane and manager.
func newHarnessOn(t *testing.T, env *testenv.Env, mgr ctrl.Manager, opts ...harnessOption) *harness {
	t.Helper()
	o := DefaultOptions()
	for _, f := range opts {
		f(&o)
	}
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	writer, err := newWriter(env.Config, env.Scheme, mgr.GetRESTMapper(), o)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecorder{}
	h := &harness{
		t:        t,
		env:      env,
		mgr:      mgr,
		ns:       env.Namespace(t),
		clock:    clocktesting.NewFakePassiveClock(fixedNow),
		registry: reg,
		logs:     logs,
	}
	h.recv = &Receiver{
		reader:   mgr.GetClient(),
		secrets:  newTokenSecrets(mgr.GetCache(), mgr.GetAPIReader()),
		store:    &store{client: writer, metrics: m},
		rules:    rules{trustForwardedFor: o.TrustForwardedFor},
		maxBody:  o.MaxBodyBytes,
		bodies:   make(chan struct{}, o.MaxConcurrentBodies),
		budget:   o.WriteTimeout,
		clock:    h.clock,
		metrics:  m,
		counters: newCounters(),
		log:      logs.logger(),
		ready:    newReadiness(),
	}
	h.srv = httptest.NewServer(h.recv)
	t.Cleanup(h.srv.Close)
	h.http = h.srv.Client()
	h.http.Timeout = 30 * time.Second // a guard against hangs, not a measure
	return h
}

// logRecorder keeps the receiver's log lines as JSON objects.
type logRecorder struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *logRecorder) logger() logr.Logger {
	return funcr.NewJSON(func(obj string) {
		var m map[string]any
		if err := json.Unmarshal([]byte(obj), &m); err != nil {
			m = map[string]any{"unparsed": obj}
		}
		l.mu.Lock()
		l.lines = append(l.lines, m)
		l.mu.Unlock()
	}, funcr.Options{})
}

// take returns the lines logged since the last take.
func (l *logRecorder) take() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// config creates a CallbackConfig in the harness's namespace and waits for
// the cache to hold it.
func (h *harness) config(name string, mutate func(*snsv1alpha1.CallbackConfig)) *snsv1alpha1.CallbackConfig {
	h.t.Helper()
	cfg := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name},
		Spec: snsv1alpha1.CallbackConfigSpec{
			SDKAppID: testAppID,
			Cleanup:  []snsv1alpha1.CleanupStep{{Name: "notify", External: &snsv1alpha1.ExternalStep{}}},
		},
	}
	if mutate != nil {
		mutate(cfg)
	}
	if err := h.env.Client.Create(h.t.Context(), cfg); err != nil {
		h.t.Fatalf("creating CallbackConfig %s: %v", name, err)
	}
	h.waitCached(cfg, &snsv1alpha1.CallbackConfig{})
	return cfg
}

// secret creates or updates a Secret with one key and waits for the cache to
// hold that version.
func (h *harness) secret(name, key, value string) {
	h.t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}}
	_, err := ctrl.CreateOrUpdate(h.t.Context(), h.env.Client, sec, func() error {
		sec.Data = map[string][]byte{key: []byte(value)}
		return nil
	})
	if err != nil {
		h.t.Fatalf("writing Secret %s: %v", name, err)
	}
	h.waitCached(sec, secretMetadata()) // the receiver caches no Secret data
}

func (h *harness) waitCached(obj client.Object, into client.Object) {
	h.t.Helper()
	NewWithT(h.t).Eventually(func(g Gomega) {
		g.Expect(h.mgr.GetCache().Get(h.t.Context(), client.ObjectKeyFromObject(obj), into)).To(Succeed())
		g.Expect(into.GetResourceVersion()).To(Equal(obj.GetResourceVersion()))
	}).WithTimeout(30 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
}

// call is one callback request. Path defaults to the "plain" config of the
// harness's namespace, Method to POST.
type call struct {
	method string
	path   string
	query  url.Values
	// rawQuery, when set, is sent as the query string instead of query.
	rawQuery string
	body     string
	header   http.Header
	// chunked sends the body without Content-Length.
	chunked bool
}

// reply is what the caller sees.
type reply struct {
	status int
	header http.Header
	raw    string
	answer answer
}

func (h *harness) do(c call) reply {
	h.t.Helper()
	r, err := h.send(c)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// send is do for other goroutines than the test's: it returns the error.
func (h *harness) send(c call) (reply, error) {
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	u := h.srv.URL + c.path
	switch {
	case c.rawQuery != "":
		u += "?" + c.rawQuery
	case c.query != nil:
		u += "?" + c.query.Encode()
	}
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(strings.NewReader(c.body)) // hides the length
	}
	req, err := http.NewRequestWithContext(context.Background(), method, u, body)
	if err != nil {
		return reply{}, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	return sendRequest(h.http, req)
}

func doRequest(t testing.TB, hc *http.Client, req *http.Request) reply {
	t.Helper()
	r, err := sendRequest(hc, req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sendRequest(hc *http.Client, req *http.Request) (reply, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.answer); err != nil {
		return r, fmt.Errorf("answer is not JSON: %q", raw)
	}
	return r, nil
}

// deletions lists the namespace's FriendDeletions from the API server.
func (h *harness) deletions() []snsv1alpha1.FriendDeletion {
	h.t.Helper()
	return listDeletions(h.t, h.env.Client, h.ns)
}

func listDeletions(t testing.TB, c client.Reader, ns string) []snsv1alpha1.FriendDeletion {
	t.Helper()
	var list snsv1alpha1.FriendDeletionList
	if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing FriendDeletions: %v", err)
	}
	return list.Items
}

// query is the query string the IM backend sends, for testAppID.
func query(extra ...string) url.Values {
	q := url.Values{
		"SdkAppid":        {testAppID},
		"CallbackCommand": {CallbackCommand},
		"contenttype":     {"json"},
		"ClientIP":        {"127.0.0.1"},
		"OptPlatform":     {"RESTAPI"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q
}

// signed adds RequestTime and its Sign for token to q.
func signed(q url.Values, token, requestTime string) url.Values {
	q.Set("RequestTime", requestTime)
	q.Set("Sign", sign(token, requestTime))
	return q
}

// pairsBody is a callback body with the given From/To pairs.
func pairsBody(pairs ...string) string {
	type pair struct {
		From string `json:"From_Account"`
		To   string `json:"To_Account"`
	}
	var list []pair
	for i := 0; i+1 < len(pairs); i += 2 {
		list = append(list, pair{pairs[i], pairs[i+1]})
	}
	b, _ := json.Marshal(map[string]any{"CallbackCommand": CallbackCommand, "PairList": list})
	return string(b)
}

// okAnswer is the protocol's success body.
const okAnswer = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`

func expectOK(t testing.TB, r reply) {
	t.Helper()
	if r.status != http.StatusOK || r.raw != okAnswer {
		t.Fatalf("want 200 %s, got %d %s", okAnswer, r.status, r.raw)
	}
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// tlsClient trusts only the given certificate.
func tlsClient(pool *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: pool}, Timeout: 30 * time.Second}
}
