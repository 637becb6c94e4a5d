package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// TestSetupWithManagerServesWithoutLeadership wires the receiver as main.go
// does, in a manager that never becomes leader because another replica
// holds the lease. It still answers callbacks over HTTPS, writes status
// counters, reports ready, and shows its metrics on the metrics endpoint.
func TestSetupWithManagerServesWithoutLeadership(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns := env.Namespace(t)
	const leaseName = "friend-deletion-operator-test"
	g.Expect(env.Client.Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: leaseName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("another-replica"),
			LeaseDurationSeconds: ptr.To(int32(3600)),
			AcquireTime:          &metav1.MicroTime{Time: time.Now()},
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	})).To(Succeed())

	certDir, roots := selfSignedCert(t)
	receiverAddr, metricsAddr, probeAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                  env.Scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          true,
		LeaderElectionID:        leaseName,
		LeaderElectionNamespace: ns,
		Logger:                  testLogs,
	})
	g.Expect(err).NotTo(HaveOccurred())
	opts := DefaultOptions()
	opts.BindAddress = receiverAddr
	opts.CertDir = certDir
	opts.StatusFlushInterval = 200 * time.Millisecond
	g.Expect(SetupWithManager(mgr, opts)).To(Succeed())

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })

	plainHTTP := &http.Client{Timeout: 30 * time.Second}
	g.Eventually(func(g Gomega) {
		resp, err := plainHTTP.Get("http://" + probeAddr + "/readyz/" + ReadyzCheckName)
		g.Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(Succeed())

	h := &harness{t: t, env: env, mgr: shared, ns: ns}
	h.config("plain", nil)
	httpsClient := tlsClient(&tls.Config{RootCAs: roots})
	url := "https://" + receiverAddr + Path(ns, "plain") + "?" + query().Encode()
	g.Eventually(func(g Gomega) { // the manager's own cache may lag the shared one
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(pairsBody("a", "b")))
		r, err := sendRequest(httpsClient, req)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(r.raw).To(Equal(okAnswer))
	}).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Expect(h.deletions()).To(HaveLen(1))

	g.Eventually(func() int64 { return h.status("plain").AcceptedCallbacks }).
		WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Equal(int64(1)))

	resp, err := plainHTTP.Get("http://" + metricsAddr + "/metrics")
	g.Expect(err).NotTo(HaveOccurred())
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(string(body)).To(ContainSubstring(fmt.Sprintf(
		`friend_deletion_receiver_callbacks_total{config="plain",namespace=%q,reason="Accepted",result="OK"} 1`, ns)))
	g.Expect(string(body)).To(ContainSubstring(fmt.Sprintf(`friend_deletion_receiver_pairs_accepted_total{config="plain",namespace=%q} 1`, ns)))
	g.Expect(string(body)).To(ContainSubstring(`friend_deletion_receiver_request_duration_seconds_count{code="200"}`))
	g.Expect(string(body)).To(ContainSubstring(`friend_deletion_receiver_apiserver_write_duration_seconds_count{outcome="created"} 1`))
	g.Expect(string(body)).To(ContainSubstring(`friend_deletion_receiver_requests_in_flight 0`))

	select {
	case <-mgr.Elected():
		t.Fatal("the manager took the lease another replica holds")
	default:
	}
}

// TestServerWithoutCertDirServesHTTPAndReportsReadiness runs the listener
// alone: plain HTTP when no cert dir is given, ready while serving, not
// ready once stopped.
func TestServerWithoutCertDirServesHTTPAndReportsReadiness(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)
	opts := DefaultOptions()
	opts.BindAddress = "127.0.0.1:0"
	opts.ShutdownDelay = 0
	srv := newServer(opts, h.recv, h.mgr.GetCache(), h.recv.ready, h.logs.logger())
	g.Expect(h.recv.ReadyCheck(nil)).To(HaveOccurred())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	g.Eventually(func() error { return h.recv.ReadyCheck(nil) }).
		WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).Should(Succeed())

	url := "http://" + srv.Addr().String() + Path(h.ns, "plain") + "?" + query().Encode()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(pairsBody("a", "b")))
	expectOK(t, doRequest(t, h.http, req))
	g.Expect(h.deletions()).To(HaveLen(1))

	cancel()
	g.Expect(<-done).To(Succeed())
	g.Expect(h.recv.ReadyCheck(nil)).To(MatchError(ContainSubstring("shutting down")))
}

// A cert dir that lacks the certificate or the key stops the start: the
// receiver never serves plain HTTP where HTTPS was asked for.
func TestServerRefusesACertDirWithoutKeyPair(t *testing.T) {
	full, _ := selfSignedCert(t)
	onlyCert := t.TempDir()
	crt, err := os.ReadFile(filepath.Join(full, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(onlyCert, CertFile), crt, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{"empty": t.TempDir(), "certificate only": onlyCert, "missing": filepath.Join(t.TempDir(), "absent")} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			opts := DefaultOptions()
			opts.BindAddress = "127.0.0.1:0"
			opts.CertDir = dir
			ready := newReadiness()
			srv := newServer(opts, http.NotFoundHandler(), nil, ready, testLogs)
			err := srv.Start(t.Context())
			g.Expect(err).To(MatchError(ContainSubstring("--receiver-cert-dir " + dir + " has no tls.")))
			g.Expect(srv.Addr()).To(BeNil(), "it never listened")
			g.Expect(ready.check()).To(HaveOccurred())
		})
	}
}

// TestServerAnswersThroughShutdownDelay stops the server the way SIGTERM
// does: readiness fails at once, callbacks are still answered OK for the
// delay, on a connection kept alive from before and on new ones, and only
// then does the port close.
func TestServerAnswersThroughShutdownDelay(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)
	opts := DefaultOptions()
	opts.BindAddress = "127.0.0.1:0"
	opts.ShutdownDelay = 3 * time.Second
	srv := newServer(opts, h.recv, h.mgr.GetCache(), h.recv.ready, h.logs.logger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	g.Eventually(func() error { return h.recv.ReadyCheck(nil) }).
		WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).Should(Succeed())

	send := func(hc *http.Client, id string) reply {
		url := "http://" + srv.Addr().String() + Path(h.ns, "plain") + "?" + query("RequestId", id).Encode()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(pairsBody("a", "b")))
		return doRequest(t, hc, req)
	}
	kept := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	expectOK(t, send(kept, "before"))

	cancel()
	g.Eventually(func() error { return h.recv.ReadyCheck(nil) }).
		WithTimeout(time.Second).WithPolling(5 * time.Millisecond).Should(MatchError(ContainSubstring("shutting down")))
	expectOK(t, send(kept, "kept-alive"))
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	expectOK(t, send(fresh, "new-connection"))
	g.Expect(h.deletions()).To(HaveLen(3))

	g.Eventually(done).WithTimeout(time.Minute).Should(Receive(Succeed()))
	_, err := fresh.Post("http://"+srv.Addr().String()+Path(h.ns, "plain"), "application/json", strings.NewReader("{}"))
	g.Expect(err).To(HaveOccurred(), "the port is closed once the server has stopped")
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// selfSignedCert writes tls.crt and tls.key for 127.0.0.1 into a new folder
// and returns it with a pool that trusts the certificate.
func selfSignedCert(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "callback-receiver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, CertFile), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return dir, pool
}
