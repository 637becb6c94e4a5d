package webhook

import (
	"fmt"
	"net/url"
	"testing"

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
