package webhook

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// TestParallelCallbacksWithRedeliveries sends 200 callbacks at once: 150
// distinct ones and 50 redeliveries of some of them, racing the originals.
// Every one is answered OK and exactly the 150 distinct callbacks are stored.
func TestParallelCallbacksWithRedeliveries(t *testing.T) {
	g := NewWithT(t)
	// The point here is deduplication, not the time budget: on a busy
	// 2-core machine 200 creates at once can take longer than 1.5s, and the
	// honest FAIL that follows would hide what this test checks.
	h := newHarness(t, func(o *Options) { o.WriteTimeout = 20 * time.Second })
	h.http.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	h.secret("im-token", "token", vectorToken)
	h.config("signed", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}}
	})
	path := Path(h.ns, "signed")
	now := strconv.FormatInt(fixedNow.Unix(), 10)

	const distinct, redelivered = 150, 50
	var calls []call
	want := map[string]bool{}
	for i := range distinct {
		from := fmt.Sprintf("user-%03d", i)
		q := signed(query(), vectorToken, now)
		if i%2 == 0 { // half carry a request id, half are told apart by their pairs
			q.Set("RequestId", "req-"+from)
		}
		calls = append(calls, call{path: path, query: q, body: pairsBody(from, "friend-a", from, "friend-b")})
		want[from] = true
	}
	for i := range redelivered {
		calls = append(calls, calls[i*3])
	}

	replies := make([]reply, len(calls))
	errs := make([]error, len(calls))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			replies[i], errs[i] = h.send(c)
		}()
	}
	close(start)
	wg.Wait()

	for i, r := range replies {
		g.Expect(errs[i]).NotTo(HaveOccurred())
		g.Expect(r.status).To(Equal(http.StatusOK), "callback %d: %s", i, r.raw)
		g.Expect(r.raw).To(Equal(okAnswer))
	}
	stored := h.deletions()
	g.Expect(stored).To(HaveLen(distinct))
	got := map[string]bool{}
	for _, fd := range stored {
		g.Expect(fd.Spec.Pairs).To(HaveLen(2))
		got[fd.Spec.Pairs[0].From] = true
	}
	g.Expect(got).To(Equal(want))
}
