package webhook

import (
	"crypto/sha256"
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"

	. "github.com/onsi/gomega"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func isControl(r rune) bool { return unicode.IsControl(r) }

func TestSignMatchesTheDocumentedVector(t *testing.T) {
	g := NewWithT(t)
	g.Expect(sign(vectorToken, vectorRequestTime)).To(Equal(vectorSign))
	g.Expect(signMatches(vectorToken, vectorRequestTime, vectorSign)).To(BeTrue())
	g.Expect(signMatches(vectorToken, vectorRequestTime, strings.ToUpper(vectorSign))).To(BeFalse())
	g.Expect(signMatches(vectorToken, vectorRequestTime, vectorSign[:63])).To(BeFalse())
	g.Expect(signMatches(vectorToken, vectorRequestTime, "")).To(BeFalse())
}

func TestRequestTime(t *testing.T) {
	now := time.Unix(1669872112, 0)
	for _, tc := range []struct {
		in     string
		ok     bool
		inSkew bool
	}{
		{"1669872112", true, true},
		{"1669872052", true, true},  // 60s before
		{"1669872172", true, true},  // 60s after
		{"1669872051", true, false}, // 61s before
		{"1669872173", true, false},
		{"0", true, false},
		{"9223372036854775807", true, false},
		{"99999999999999999999", false, false},
		{"+1669872112", false, false},
		{"-1", false, false},
		{"1669872112.5", false, false},
		{" 1669872112", false, false},
		{"", false, false},
	} {
		got, ok := parseRequestTime(tc.in)
		if ok != tc.ok {
			t.Errorf("parseRequestTime(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if ok && withinSkew(got, now, time.Minute) != tc.inSkew {
			t.Errorf("withinSkew(%q) = %v, want %v", tc.in, !tc.inSkew, tc.inSkew)
		}
	}
}

func TestSourceAddress(t *testing.T) {
	cidrs := []snsv1alpha1.CIDR{"203.0.113.0/24", "2001:db8::/32", "::ffff:198.51.100.0/120"}
	for _, tc := range []struct {
		remote  string
		xff     []string
		trust   bool
		want    string
		allowed bool
	}{
		{remote: "203.0.113.5:1234", want: "203.0.113.5", allowed: true},
		{remote: "[2001:db8::7]:443", want: "2001:db8::7", allowed: true},
		{remote: "[::ffff:203.0.113.5]:443", want: "203.0.113.5", allowed: true},
		{remote: "198.51.100.4:1", want: "198.51.100.4", allowed: true},
		{remote: "127.0.0.1:1", want: "127.0.0.1"},
		{remote: "127.0.0.1:1", xff: []string{"203.0.113.5"}, want: "127.0.0.1"},
		{remote: "127.0.0.1:1", xff: []string{"203.0.113.5"}, trust: true, want: "203.0.113.5", allowed: true},
		{remote: "127.0.0.1:1", xff: []string{"203.0.113.5, 10.0.0.1"}, trust: true, want: "10.0.0.1"},
		{remote: "127.0.0.1:1", xff: []string{"10.0.0.1", "203.0.113.5:8443"}, trust: true, want: "203.0.113.5", allowed: true},
		{remote: "127.0.0.1:1", xff: []string{"[2001:db8::1]:80"}, trust: true, want: "2001:db8::1", allowed: true},
		{remote: "127.0.0.1:1", xff: []string{"unknown"}, trust: true, want: ""},
		{remote: "bogus", want: ""},
	} {
		addr, ok := sourceAddr(tc.remote, tc.xff, tc.trust)
		if tc.want == "" {
			if ok {
				t.Errorf("sourceAddr(%q, %q) = %s, want none", tc.remote, tc.xff, addr)
			}
			continue
		}
		if !ok || addr != netip.MustParseAddr(tc.want) {
			t.Errorf("sourceAddr(%q, %q, %v) = %s %v, want %s", tc.remote, tc.xff, tc.trust, addr, ok, tc.want)
			continue
		}
		if got := sourceAllowed(addr, cidrs); got != tc.allowed {
			t.Errorf("sourceAllowed(%s) = %v, want %v", addr, got, tc.allowed)
		}
	}
}

func TestRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/callbacks/ns/name":        "ns/name",
		"/callbacks/ns-1/a.b-c":     "ns-1/a.b-c",
		"/callbacks/ns/name/":       "",
		"/callbacks/ns/":            "",
		"/callbacks//name":          "",
		"/callbacks/NS/name":        "",
		"/callbacks/ns/Name":        "",
		"/callbacks/ns/a/b":         "",
		"/callbacks/ns.dotted/name": "",
		"/callback/ns/name":         "",
		"/":                         "",
		"/callbacks/ns/" + strings.Repeat("a", 254): "",
	} {
		got, ok := route(path)
		if want == "" {
			if ok {
				t.Errorf("route(%q) = %s, want no route", path, got)
			}
		} else if !ok || got.String() != want {
			t.Errorf("route(%q) = %s %v, want %s", path, got, ok, want)
		}
	}
}

func TestFriendDeletionName(t *testing.T) {
	g := NewWithT(t)
	at := time.Unix(1669872112, 0)
	base := func() *callback {
		return &callback{pairs: []snsv1alpha1.FriendPair{{From: "a", To: "b"}, {From: "a", To: "c"}}, bodyHash: sha256.Sum256([]byte("body"))}
	}
	name := func(uid string, mutate func(*callback), when time.Time) string {
		cb := base()
		if mutate != nil {
			mutate(cb)
		}
		return friendDeletionName(k8stypes.UID(uid), cb, when)
	}
	n := name("uid", nil, at)
	g.Expect(n).To(MatchRegexp(`^fd-[a-z2-7]{24}$`))
	g.Expect(validation.IsDNS1123Label(n)).To(BeEmpty())

	same := map[string]string{
		"again":                  name("uid", nil, at),
		"pairs in another order": name("uid", func(c *callback) { c.pairs[0], c.pairs[1] = c.pairs[1], c.pairs[0] }, at),
		"same second, later":     name("uid", nil, at.Add(999*time.Millisecond)),
	}
	for what, got := range same {
		g.Expect(got).To(Equal(n), what)
	}
	withID := name("uid", func(c *callback) { c.requestID = "r1" }, at)
	g.Expect(name("uid", func(c *callback) { c.requestID = "r1"; c.requestTime = "5"; c.bodyHash = sha256.Sum256([]byte("x")) }, at.Add(time.Hour))).
		To(Equal(withID), "unsigned, the request id alone tells deliveries apart")
	withTime := name("uid", func(c *callback) { c.requestTime = "5" }, at)
	g.Expect(name("uid", func(c *callback) { c.requestTime = "5"; c.bodyHash = sha256.Sum256([]byte("x")) }, at.Add(time.Hour))).
		To(Equal(withTime), "without a request id, RequestTime does")

	// Signed, the signed RequestTime always counts, and the request id with
	// it: an unsigned id cannot make a later deletion's name.
	signedAt := func(rt, id string) string {
		return name("uid", func(c *callback) { c.signed = true; c.requestTime = rt; c.requestID = id }, at)
	}
	g.Expect(signedAt("5", "r1")).To(Equal(name("uid", func(c *callback) {
		c.signed, c.requestTime, c.requestID, c.bodyHash = true, "5", "r1", sha256.Sum256([]byte("x"))
	}, at.Add(time.Hour))), "a signed redelivery collapses")
	g.Expect(signedAt("6", "r1")).NotTo(Equal(signedAt("5", "r1")), "the same unsigned id with another signed time is another deletion")
	g.Expect(signedAt("5", "r1")).NotTo(Equal(withID), "signed and unsigned names differ")

	different := map[string]string{
		"another config":             name("uid2", nil, at),
		"another pair":               name("uid", func(c *callback) { c.pairs[1].To = "d" }, at),
		"a pair less":                name("uid", func(c *callback) { c.pairs = c.pairs[:1] }, at),
		"pair fields shifted":        name("uid", func(c *callback) { c.pairs = []snsv1alpha1.FriendPair{{From: "ab", To: ""}, {From: "a", To: "c"}} }, at),
		"another body":               name("uid", func(c *callback) { c.bodyHash = sha256.Sum256([]byte("other")) }, at),
		"the next second":            name("uid", nil, at.Add(time.Second)),
		"with a request id":          withID,
		"with a RequestTime":         withTime,
		"request id equal to a time": name("uid", func(c *callback) { c.requestID = "5" }, at),
	}
	seen := map[string]string{n: "base"}
	for what, got := range different {
		g.Expect(seen).NotTo(HaveKey(got), "%s collides with %s", what, seen[got])
		seen[got] = what
	}
}

func TestCleanParam(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"RESTAPI", 32, "RESTAPI"},
		{"", 32, ""},
		{"a\x00b\nc\u0085d", 32, "abcd"},
		{"ab\xffcd", 32, "abcd"},
		{strings.Repeat("x", 40), 32, strings.Repeat("x", 32)},
		{"xx" + strings.Repeat("é", 20), 5, "xxé"}, // cut on a character boundary
	} {
		if got := cleanParam(tc.in, tc.max); got != tc.want {
			t.Errorf("cleanParam(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestConfigLabelValue(t *testing.T) {
	g := NewWithT(t)
	g.Expect(configLabelValue("plain")).To(Equal("plain"))
	g.Expect(configLabelValue("a.b-c")).To(Equal("a.b-c"))
	long1 := strings.Repeat("a", 45) + "." + strings.Repeat("b", 30)
	long2 := strings.Repeat("a", 45) + "." + strings.Repeat("c", 30)
	for _, name := range []string{long1, long2} {
		g.Expect(validation.IsValidLabelValue(configLabelValue(name))).To(BeEmpty())
		g.Expect(configLabelValue(name)).To(HavePrefix(strings.Repeat("a", 45) + "-"))
	}
	g.Expect(configLabelValue(long1)).NotTo(Equal(configLabelValue(long2)))
}

func TestOptionsFlags(t *testing.T) {
	g := NewWithT(t)
	o := DefaultOptions()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	o.BindFlags(fs)
	g.Expect(fs.Parse([]string{
		"--receiver-bind-address=127.0.0.1:9443", "--receiver-cert-dir=/certs", "--receiver-max-body-bytes=2048",
		"--receiver-max-concurrent-bodies=8", "--receiver-write-timeout=1s", "--receiver-trust-forwarded-for", "--receiver-status-flush-interval=10s",
		"--receiver-kube-api-qps=-1", "--receiver-kube-api-burst=5", "--receiver-shutdown-timeout=3s",
		"--receiver-shutdown-delay=2s", "--receiver-spool-dir=/spool", "--receiver-spool-max-bytes=4096",
		"--receiver-spool-after=700ms", "--receiver-spool-drain-timeout=1s", "--receiver-spool-requeue-rejected", "--receiver-replica-name=pod-0",
	})).To(Succeed())
	g.Expect(o).To(Equal(Options{
		BindAddress: "127.0.0.1:9443", CertDir: "/certs", MaxBodyBytes: 2048, MaxConcurrentBodies: 8, WriteTimeout: time.Second,
		TrustForwardedFor: true, StatusFlushInterval: 10 * time.Second, KubeAPIQPS: -1, KubeAPIBurst: 5,
		ShutdownTimeout: 3 * time.Second, ShutdownDelay: 2 * time.Second, SpoolDir: "/spool", SpoolMaxBytes: 4096,
		SpoolAfter: 700 * time.Millisecond, SpoolDrainTimeout: time.Second, SpoolRequeueRejected: true, ReplicaName: "pod-0",
	}))
	g.Expect(o.Validate()).To(Succeed())

	d := DefaultOptions()
	g.Expect(d.BindAddress).To(Equal(":8080"))
	g.Expect(d.MaxBodyBytes).To(Equal(int64(1 << 20)))
	g.Expect(d.WriteTimeout).To(Equal(1500 * time.Millisecond))
	g.Expect(d.TrustForwardedFor).To(BeFalse())
	g.Expect(d.ShutdownDelay).To(Equal(5 * time.Second))
	g.Expect(d.SpoolDir).To(BeEmpty(), "the spool is off unless a folder is given")
	g.Expect(d.SpoolAfter).To(BeNumerically("<", d.WriteTimeout))

	for _, bad := range []func(*Options){
		func(o *Options) { o.BindAddress = "" },
		func(o *Options) { o.MaxBodyBytes = 0 },
		func(o *Options) { o.WriteTimeout = 0 },
		func(o *Options) { o.StatusFlushInterval = 0 },
		func(o *Options) { o.KubeAPIBurst = 0 },
		func(o *Options) { o.ShutdownDelay = -time.Second },
		func(o *Options) { o.SpoolDir, o.SpoolMaxBytes = "/spool", 0 },
		func(o *Options) { o.SpoolDir, o.SpoolAfter = "/spool", o.WriteTimeout },
		func(o *Options) { o.SpoolDir, o.SpoolAfter = "/spool", 0 },
		func(o *Options) { o.ReplicaName = "Not A Name!" },
	} {
		o := DefaultOptions()
		bad(&o)
		g.Expect(o.Validate()).To(HaveOccurred())
	}
}

// TestAccountCharacters walks every code point: an account may hold only
// U+0020 and characters of the letter, mark, number, punctuation and symbol
// categories, so an unassigned code point (no category), like every other
// invisible class, is refused; and the characters of names in use (CJK,
// Hangul, Cyrillic, Arabic, an emoji) pass.
func TestAccountCharacters(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue // surrogates are not in valid UTF-8
		}
		if runeProblem(r) == "" && r != ' ' && !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) {
			t.Errorf("U+%04X passes, outside the letter, mark, number, punctuation and symbol categories", r)
		}
	}
	for _, r := range []rune{0x0378, 0x0380, 0x1FFFD, 0x2FFFD} {
		if runeProblem(r) == "" {
			t.Errorf("unassigned U+%04X passes", r)
		}
	}
	for _, account := range []string{"张伟", "김민준", "Дмитрий", "محمد", "user_01-a", "Ana María", "😀"} {
		if problem := accountProblem(account); problem != "" {
			t.Errorf("accountProblem(%q) = %q, want none", account, problem)
		}
	}
}
