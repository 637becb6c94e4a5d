package imrest_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/internal/imrest"
	"github.com/imcallback/friend-deletion-operator/internal/imrest/imresttest"
)

// BenchmarkVerify2000Pairs verifies 2000-pair FriendDeletions against the
// fake IM REST API over real HTTP, at the default limit of 20 calls per
// second: one user deleting 2000 others one way (two calls of 1000), and a
// two-way delete of 1000 friends (one call answers both directions). It
// reports calls per deletion, the highest number of calls the server saw
// in any one second (which must not pass the limit plus its burst of 1),
// and the time per deletion, which the limit sets.
func BenchmarkVerify2000Pairs(b *testing.B) {
	const rps = 20
	shapes := map[string][]snsv1alpha1.FriendPair{"one-way": nil, "two-way": twoWay("alice", 1000)}
	for i := range 2000 {
		shapes["one-way"] = append(shapes["one-way"], snsv1alpha1.FriendPair{From: "alice", To: fmt.Sprintf("user-%04d", i)})
	}
	for _, name := range []string{"one-way", "two-way"} {
		ps := shapes[name]
		b.Run(name, func(b *testing.B) {
			srv := imresttest.NewServer(appID, admin, key)
			defer srv.Close()
			cl := imrest.New(imrest.Config{
				Endpoint: srv.URL, SDKAppID: 1400000001, Identifier: admin,
				HTTP: &http.Client{Timeout: 10 * time.Second}, RequestsPerSecond: rps, MaxWait: time.Minute,
			})
			cl.SetKey(key, "1")
			calls := 0
			b.ResetTimer()
			for range b.N {
				rel := unknown(len(ps))
				n, err := imrest.Verify(context.Background(), cl, ps, rel)
				if err != nil {
					b.Fatal(err)
				}
				calls += n
			}
			b.StopTimer()
			if got := len(srv.Calls()); got != calls {
				b.Fatalf("the server saw %d calls, the client made %d", got, calls)
			}
			peak := peakPerSecond(srv.Calls())
			if peak > rps+1 {
				b.Errorf("%d calls within one second, over the limit of %d (+1 burst)", peak, rps)
			}
			b.ReportMetric(float64(calls)/float64(b.N), "calls/deletion")
			b.ReportMetric(float64(peak), "peak-calls/s")
		})
	}
}

// peakPerSecond is the most calls within any one-second window.
func peakPerSecond(ts []time.Time) int {
	peak, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= time.Second {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	return peak
}
