package webhook

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// BenchmarkCheck measures the acceptance rules and the naming of the object,
// all the receiver does for a callback besides HTTP and the API server write.
// Run it with go test -run '^$' -bench Check ./webhook.
func BenchmarkCheck(b *testing.B) {
	for _, pairs := range []int{1, 100, snsv1alpha1.MaxPairs} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
			var list []string
			for i := range pairs {
				list = append(list, fmt.Sprintf("user_%09d", i/2), fmt.Sprintf("friend_%09d", i))
			}
			body := []byte(pairsBody(list...))
			q, _ := url.ParseQuery(query("RequestTime", vectorRequestTime, "Sign", vectorSign).Encode())
			cfg := fuzzConfigs[1] // with auth
			in := inbound{method: "POST", query: q, remoteAddr: "127.0.0.1:1", body: func() ([]byte, *rejection) { return body, nil }}
			token := func() (string, error) { return vectorToken, nil }
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				cb, rej := rules{}.check(cfg, in, token, fixedNow)
				if rej != nil {
					b.Fatal(rej)
				}
				_ = newFriendDeletion(cfg, cb, fixedNow)
			}
		})
	}
}

// BenchmarkSpoolWrite measures what the spool adds to a callback's answer
// when the API server did not take it: one put, encoding and fsynced commit
// included, and reports its median and 99th percentile. parallel=8 puts
// from eight goroutines at once, as callbacks arrive together in an outage,
// so that each waits for the others' commits. The spool lives in
// $SPOOL_BENCH_DIR when set (to measure a given disk), else in a temporary
// folder. Run it with go test -run '^$' -bench SpoolWrite ./webhook.
func BenchmarkSpoolWrite(b *testing.B) {
	for _, pairs := range []int{1, 100, snsv1alpha1.MaxPairs} {
		for _, parallel := range []int{1, 8} {
			b.Run(fmt.Sprintf("pairs=%d/parallel=%d", pairs, parallel), func(b *testing.B) {
				dir := b.TempDir()
				if d := os.Getenv("SPOOL_BENCH_DIR"); d != "" {
					var err error
					if dir, err = os.MkdirTemp(d, "spool-bench-"); err != nil {
						b.Fatal(err)
					}
					defer os.RemoveAll(dir)
				}
				s, err := openSpool(dir, 1<<40, time.Second)
				if err != nil {
					b.Fatal(err)
				}
				defer s.close()
				obj := spoolObject("ns", "plain", "fd-", pairs)
				var (
					seq   atomic.Int64
					mu    sync.Mutex
					times []time.Duration
				)
				put := func() time.Duration {
					fd := obj.DeepCopy()
					fd.Name = fmt.Sprintf("fd-%d", seq.Add(1))
					start := time.Now()
					if _, err := s.put(fd); err != nil {
						b.Error(err)
					}
					return time.Since(start)
				}
				b.ReportAllocs()
				if parallel == 1 {
					for b.Loop() {
						times = append(times, put())
					}
				} else {
					var wg sync.WaitGroup
					per := (b.N + parallel - 1) / parallel
					b.ResetTimer()
					for range parallel {
						wg.Go(func() {
							mine := make([]time.Duration, 0, per)
							for range per {
								mine = append(mine, put())
							}
							mu.Lock()
							times = append(times, mine...)
							mu.Unlock()
						})
					}
					wg.Wait()
				}
				slices.Sort(times)
				if len(times) > 0 {
					b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(times[(len(times)*99)/100].Microseconds())/1000, "p99-ms")
				}
			})
		}
	}
}
