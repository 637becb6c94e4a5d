package webhook

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// TestAPIServerStoppedMidway stops kube-apiserver while callbacks keep
// coming, then starts it again. While it is down callbacks are answered 503
// FAIL; every callback answered OK, before, during or after, is stored. It
// runs on a control plane of its own, so that stopping it cannot disturb the
// package's other tests.
func TestAPIServerStoppedMidway(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	own, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = own.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	mgr, stopped, err := startManager(ctx, own)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-stopped })

	h := newHarnessOn(t, own, mgr, func(o *Options) { o.WriteTimeout = 700 * time.Millisecond })
	h.http.Transport.(*http.Transport).MaxIdleConnsPerHost = 8
	h.config("plain", nil)
	path := Path(h.ns, "plain")

	// Senders: each callback has its own request id; remember every answer.
	type result struct {
		id    string
		reply reply
		phase int32
	}
	var (
		phase   atomic.Int32 // 0 up, 1 down, 2 up again
		mu      sync.Mutex
		results []result
		seq     atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	count := func(ph int32, status int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.phase == ph && r.reply.status == status {
				n++
			}
		}
		return n
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%06d", w, seq.Add(1))
				ph := phase.Load()
				r, err := h.send(call{path: path, query: query("RequestId", id), body: pairsBody("user-"+id, "friend")})
				if err != nil {
					t.Errorf("callback %s: %v", id, err)
					return
				}
				mu.Lock()
				results = append(results, result{id: id, reply: r, phase: ph})
				mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	eventually := func(f func() bool) {
		t.Helper()
		g.Eventually(f).WithTimeout(2 * time.Minute).WithPolling(50 * time.Millisecond).Should(BeTrue())
	}

	eventually(func() bool { return count(0, http.StatusOK) >= 20 })

	apiserver := own.Environment.ControlPlane.APIServer
	certs := keepServingCerts(t, apiserver)
	phase.Store(1)
	// kube-apiserver drains open watches (the cache's) longer than envtest
	// waits; envtest then kills it, which is an outage all the same.
	if err := apiserver.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process kube-apiserver to stop") {
		t.Fatalf("stopping kube-apiserver: %v", err)
	}
	eventually(func() bool { return count(1, http.StatusServiceUnavailable) >= 12 })

	apiserver.CertDir = certs
	apiserver.StartTimeout = 2 * time.Minute
	g.Expect(apiserver.Start()).To(Succeed())
	phase.Store(2)
	eventually(func() bool { return count(2, http.StatusOK) >= 20 })
	close(stop)
	wg.Wait()

	// What the caller saw: OK, or 503 FAIL with the protocol's body.
	acked := map[string]bool{}
	for _, r := range results {
		switch r.reply.status {
		case http.StatusOK:
			g.Expect(r.reply.raw).To(Equal(okAnswer))
			acked[r.id] = true
		case http.StatusServiceUnavailable:
			g.Expect(r.reply.answer.ActionStatus).To(Equal("FAIL"))
			g.Expect(r.reply.answer.ErrorCode).To(Equal(1))
			g.Expect(r.reply.answer.ErrorInfo).To(BeElementOf(
				"the FriendDeletion could not be stored in time", "the FriendDeletion could not be stored"))
		default:
			t.Errorf("callback %s answered %d %s", r.id, r.reply.status, r.reply.raw)
		}
	}

	// Nothing answered OK is missing.
	stored := map[string]bool{}
	for _, fd := range listDeletions(t, own.Client, h.ns) {
		stored[fd.Spec.RequestID] = true
	}
	var missing []string
	for id := range acked {
		if !stored[id] {
			missing = append(missing, id)
		}
	}
	g.Expect(missing).To(BeEmpty(), "callbacks answered OK but not stored")
	t.Logf("%d callbacks answered OK, %d answered 503 while kube-apiserver was down, %d stored",
		len(acked), count(1, http.StatusServiceUnavailable), len(stored))
}

// keepServingCerts copies kube-apiserver's certificates out of the folder
// envtest deletes on Stop, so that it comes back with the same serving
// certificate and the clients made for it keep trusting it.
func keepServingCerts(t *testing.T, apiserver *envtest.APIServer) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(apiserver.CertDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(apiserver.CertDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
