package webhook

import (
	"bytes"
	"strings"
	"testing"
)

// hostileBodies are bodies of about 1 MiB, the default limit, built to make
// a parser work: long lists of items that fail the first check, and lists
// of duplicates that pass every check but add nothing.
func hostileBodies() map[string][]byte {
	list := func(item string) []byte {
		n := (1<<20 - 64) / (len(item) + 1)
		var b bytes.Buffer
		b.WriteString(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[`)
		b.WriteString(strings.TrimSuffix(strings.Repeat(item+",", n), ","))
		b.WriteString(`]}`)
		return b.Bytes()
	}
	return map[string][]byte{
		"numbers":    list(`1`),
		"empty-objs": list(`{}`),
		"same-pair":  list(`{"From_Account":"a","To_Account":"b"}`),
	}
}

// BenchmarkParseHostile measures what a hostile 1 MiB body costs the body
// parser: bytes allocated per body (B/op) is the figure that matters, since
// it is what many such bodies at once cost the receiver's heap.
// Run it with go test -run '^$' -bench ParseHostile -benchmem ./webhook.
func BenchmarkParseHostile(b *testing.B) {
	for name, body := range hostileBodies() {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				p := parseBody(body)
				if p.invalid == nil && p.command == nil && p.pairsErr == nil && len(p.pairs) == 0 {
					b.Fatal("a hostile body parsed to nothing")
				}
			}
		})
	}
}
