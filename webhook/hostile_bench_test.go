package webhook

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

// hostileBodies are bodies of about 1 MiB, the default limit, built to make
// a parser work: long lists of items that fail the first check, lists of
// duplicates that pass every check but add nothing, lists of distinct pairs
// past the limit, one long string where an account or an unknown member
// goes, and deep nesting.
func hostileBodies() map[string][]byte {
	const size = 1<<20 - 64
	list := func(items ...string) []byte {
		var b bytes.Buffer
		b.WriteString(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[`)
		for i := 0; b.Len() < size-64; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(items[i%len(items)])
		}
		b.WriteString(`]}`)
		return b.Bytes()
	}
	var distinct bytes.Buffer
	distinct.WriteString(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[`)
	for i := 0; distinct.Len() < size-64; i++ {
		if i > 0 {
			distinct.WriteByte(',')
		}
		fmt.Fprintf(&distinct, `{"From_Account":"u%d","To_Account":"f%d"}`, i, i)
	}
	distinct.WriteString(`]}`)
	long := strings.Repeat("x", size-100)
	return map[string][]byte{
		"numbers":           list(`1`),
		"strings":           list(`"x"`),
		"empty-objs":        list(`{}`),
		"empty-arrays":      list(`[]`),
		"same-pair":         list(`{"From_Account":"a","To_Account":"b"}`),
		"two-pairs-in-turn": list(`{"From_Account":"a","To_Account":"b"}`, `{"From_Account":"c","To_Account":"d"}`),
		"escaped-pair":      list(`{"From_Account":"\u0061\u0061","To_Account":"\u0062"}`),
		"distinct-pairs":    distinct.Bytes(),
		"long-account":      []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"` + long + `","To_Account":"b"}]}`),
		"long-unknown":      []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","Other":"` + long + `","PairList":[{"From_Account":"a","To_Account":"b"}]}`),
		"long-command":      []byte(`{"CallbackCommand":"` + long + `","PairList":[{"From_Account":"a","To_Account":"b"}]}`),
		"deep-arrays":       []byte(`{"PairList":[` + strings.Repeat(`[`, size-20)),
		"deep-objects":      []byte(`{"PairList":[` + strings.Repeat(`{"a":`, (size-20)/5)),
	}
}

// maxHostileAlloc bounds the bytes the parser may allocate for one hostile
// body of about 1 MiB: less than the body itself. The parser that decoded
// whole lists allocated 68 to 227 MB for some of these.
const maxHostileAlloc = 1 << 20

// TestHostileBodiesCostLittleMemory parses each hostile body and bounds the
// bytes allocated while doing so (the process's cumulative allocation
// count, the least of a few parses, so that other goroutines' allocations
// do not count). It measures memory, not time.
func TestHostileBodiesCostLittleMemory(t *testing.T) {
	for name, body := range hostileBodies() {
		t.Run(name, func(t *testing.T) {
			var p payload
			least := uint64(math.MaxUint64)
			var ms runtime.MemStats
			for range 5 {
				runtime.ReadMemStats(&ms)
				before := ms.TotalAlloc
				p = parseBody(body)
				runtime.ReadMemStats(&ms)
				least = min(least, ms.TotalAlloc-before)
			}
			t.Logf("%d-byte body: %d bytes allocated", len(body), least)
			if least >= maxHostileAlloc {
				t.Errorf("parsing a %d-byte hostile body allocated %d bytes, want under %d", len(body), least, maxHostileAlloc)
			}
			if p.invalid == nil && p.command == nil && p.pairsErr == nil && len(p.pairs) == 0 {
				t.Error("the body parsed to nothing")
			}
		})
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
