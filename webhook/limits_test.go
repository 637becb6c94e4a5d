package webhook

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// stalledBodies is how many connections the memory test holds open.
const stalledBodies = 200

// TestStalledBodiesCostLittleMemory opens 200 connections that each send a
// callback's headers promising a 1 MiB body, and then nothing. The receiver
// reads as many bodies at once as it has slots (32 by default) and answers
// the rest 503 at once; none of them costs the heap what it promised, so
// the test process's live heap grows by far less than the 200 MiB promised.
// Once the senders hang up, the slots are free again.
func TestStalledBodiesCostLittleMemory(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)
	slots := DefaultOptions().MaxConcurrentBodies
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	head := fmt.Sprintf("POST %s?%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		Path(h.ns, "plain"), query().Encode(), addr, 1<<20)

	before := liveHeap()
	var busy, other atomic.Int32
	conns := make([]net.Conn, 0, stalledBodies)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range stalledBodies {
		c, err := net.Dial("tcp", addr)
		g.Expect(err).NotTo(HaveOccurred())
		conns = append(conns, c)
		_, err = c.Write([]byte(head))
		g.Expect(err).NotTo(HaveOccurred())
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			switch {
			case err != nil:
				return // closed by the test
			case resp.StatusCode == http.StatusServiceUnavailable:
				busy.Add(1)
			default:
				other.Add(1)
			}
			resp.Body.Close()
		}()
	}
	// Every request past the slots has its answer: all 200 are read as far
	// as they go.
	g.Eventually(busy.Load).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).
		Should(Equal(int32(stalledBodies - slots)))
	g.Expect(other.Load()).To(BeZero(), "the stalled bodies are still being waited for")

	grown := int64(liveHeap()) - int64(before)
	t.Logf("live heap grew by %.1f MiB with %d stalled bodies of 1 MiB promised", float64(grown)/(1<<20), stalledBodies)
	g.Expect(grown).To(BeNumerically("<", 32<<20), "a generous bound: the promised bodies alone would be 200 MiB")

	r := h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody("a", "b")})
	g.Expect(r.status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(r.answer.ErrorInfo).To(Equal(fmt.Sprintf("the receiver is reading %d bodies already", slots)))

	for _, c := range conns {
		c.Close()
	}
	g.Eventually(func() int {
		r, err := h.send(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody("a", "b")})
		g.Expect(err).NotTo(HaveOccurred())
		return r.status
	}).WithTimeout(time.Minute).WithPolling(20 * time.Millisecond).Should(Equal(http.StatusOK))
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
