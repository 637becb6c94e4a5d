package webhook

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// seedBody is the request packet example of the protocol page, verbatim.
const seedBody = `{
    "CallbackCommand": "Sns.CallbackFriendDelete", 
    "PairList": [
        {
            "From_Account": "id", 
            "To_Account": "id1"
        }, 
        {
            "From_Account": "id", 
            "To_Account": "id2"
        }, 
        {
            "From_Account": "id", 
            "To_Account": "id3"
        }
    ]
}`

func TestSeedExampleIsStored(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)

	// The URL of the protocol page's example, on the config's path.
	u := "/callbacks/" + h.ns + "/plain?SdkAppid=" + testAppID + "&CallbackCommand=Sns.CallbackFriendDelete&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+u, strings.NewReader(seedBody))
	g.Expect(err).NotTo(HaveOccurred())
	r := doRequest(t, h.http, req)

	g.Expect(r.status).To(Equal(http.StatusOK))
	g.Expect(r.header.Get("Content-Type")).To(Equal("application/json"))
	g.Expect(r.raw).To(Equal(okAnswer))
	g.Expect(r.answer).To(Equal(answer{ActionStatus: "OK", ErrorCode: 0, ErrorInfo: ""}))

	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	fd := stored[0]
	g.Expect(fd.Name).To(HavePrefix(NamePrefix))
	g.Expect(validation.IsDNS1123Subdomain(fd.Name)).To(BeEmpty())
	g.Expect(fd.Labels).To(Equal(map[string]string{
		snsv1alpha1.LabelConfig:   "plain",
		snsv1alpha1.LabelSDKAppID: testAppID,
		snsv1alpha1.LabelFromHash: snsv1alpha1.FromAccountHash("id"),
	}))
	g.Expect(fd.Spec).To(Equal(snsv1alpha1.FriendDeletionSpec{
		ConfigName: "plain",
		SDKAppID:   testAppID,
		Pairs: []snsv1alpha1.FriendPair{
			{From: "id", To: "id1"}, {From: "id", To: "id2"}, {From: "id", To: "id3"},
		},
		PairCount:   3,
		ClientIP:    "127.0.0.1",
		OptPlatform: "RESTAPI",
		ReceivedAt:  metav1.NewTime(fixedNow), // read back in local time
	}))
	g.Expect(h.logs.take()).To(BeEmpty(), "an accepted callback logs nothing at the default level")
}

func TestSignedTestVectorIsStored(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.secret("im-token", "token", vectorToken)
	h.config("signed", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}}
	})
	q := query("RequestTime", vectorRequestTime, "Sign", vectorSign)

	expectOK(t, h.do(call{path: Path(h.ns, "signed"), query: q, body: seedBody}))
	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	g.Expect(stored[0].Spec.PairCount).To(Equal(int32(3)))

	// The same request a minute and a second after it was signed is a replay.
	h.clock.SetTime(time.Unix(1669872112+61, 0))
	r := h.do(call{path: Path(h.ns, "signed"), query: q, body: seedBody})
	g.Expect(r.status).To(Equal(http.StatusUnauthorized))
	g.Expect(r.answer.ErrorInfo).To(Equal("RequestTime is more than 1m0s from the receiver's clock"))
}

func TestTokenRotationTakesEffectWithoutRestart(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.secret("im-token", "token", "old-token\n") // a trailing newline, as from a file
	h.config("signed", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{
			TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"},
			MaxClockSkew:   &metav1.Duration{Duration: 10 * time.Second},
		}
	})
	rt := strconv.FormatInt(fixedNow.Unix(), 10)
	send := func(token, from string) reply {
		return h.do(call{path: Path(h.ns, "signed"), query: signed(query(), token, rt), body: pairsBody(from, "x")})
	}

	expectOK(t, send("old-token", "a"))

	h.secret("im-token", "token", "new-token")
	r := send("old-token", "b")
	g.Expect(r.status).To(Equal(http.StatusUnauthorized))
	g.Expect(r.answer.ErrorInfo).To(Equal("Sign does not match"))
	expectOK(t, send("new-token", "c"))

	var froms []string
	for _, fd := range h.deletions() {
		froms = append(froms, fd.Spec.Pairs[0].From)
	}
	g.Expect(froms).To(ConsistOf("a", "c"))
}

func TestDuplicatePairsAreKeptOnce(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)

	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody("b", "1", "a", "2", "b", "1", "a", "2", "a", "3")}))

	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	g.Expect(stored[0].Spec.Pairs).To(Equal([]snsv1alpha1.FriendPair{{From: "b", To: "1"}, {From: "a", To: "2"}, {From: "a", To: "3"}}))
	g.Expect(stored[0].Spec.PairCount).To(Equal(int32(3)))
	g.Expect(stored[0].Labels[snsv1alpha1.LabelFromHash]).To(Equal(snsv1alpha1.FromAccountHash("b")))
}

func TestRedeliveryFindsTheStoredObject(t *testing.T) {
	h := newHarness(t)
	h.secret("im-token", "token", vectorToken)
	h.config("plain", nil)
	h.config("signed", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}}
	})
	plain, signedPath := Path(h.ns, "plain"), Path(h.ns, "signed")
	count := func() int { return len(h.deletions()) }
	rt := func(offset int64) string { return strconv.FormatInt(fixedNow.Unix()+offset, 10) }

	steps := []struct {
		name  string
		call  call
		total int
	}{
		{"first delivery with a request id", call{path: plain, query: query("RequestId", "req-1"), body: pairsBody("a", "b", "a", "c")}, 1},
		{"redelivery, pairs in another order", call{path: plain, query: query("RequestId", "req-1"), body: pairsBody("a", "c", "a", "b")}, 1},
		{"redelivery spelled RequestID", call{path: plain, query: query("RequestID", "req-1"), body: pairsBody("a", "b", "a", "c")}, 1},
		{"same pairs, another request id", call{path: plain, query: query("RequestId", "req-2"), body: pairsBody("a", "b", "a", "c")}, 2},
		{"signed delivery", call{path: signedPath, query: signed(query(), vectorToken, rt(0)), body: pairsBody("a", "b")}, 3},
		{"signed redelivery", call{path: signedPath, query: signed(query(), vectorToken, rt(0)), body: pairsBody("a", "b")}, 3},
		{"same pair deleted again a second later", call{path: signedPath, query: signed(query(), vectorToken, rt(1)), body: pairsBody("a", "b")}, 4},
		{"signed, with a request id", call{path: signedPath, query: signed(query("RequestId", "req-9"), vectorToken, rt(0)), body: pairsBody("a", "b")}, 5},
		{"its signed redelivery", call{path: signedPath, query: signed(query("RequestId", "req-9"), vectorToken, rt(0)), body: pairsBody("a", "b")}, 5},
		{"the same unsigned id with another signed time", call{path: signedPath, query: signed(query("RequestId", "req-9"), vectorToken, rt(2)), body: pairsBody("a", "b")}, 6},
		{"no id nor time", call{path: plain, query: query(), body: pairsBody("z", "y")}, 7},
		{"its redelivery in the same second", call{path: plain, query: query(), body: pairsBody("z", "y")}, 7},
		{"a spelling never seen is no request id", call{path: plain, query: query("requestid", "req-1"), body: pairsBody("a", "b", "a", "c")}, 8},
	}
	for _, s := range steps {
		expectOK(t, h.do(s.call))
		if got := count(); got != s.total {
			t.Fatalf("%s: %d FriendDeletions, want %d", s.name, got, s.total)
		}
	}

	// Without request id or RequestTime, the arrival second tells two
	// deletions of the same pairs apart.
	h.clock.SetTime(fixedNow.Add(time.Second))
	expectOK(t, h.do(call{path: plain, query: query(), body: pairsBody("z", "y")}))
	NewWithT(t).Expect(count()).To(Equal(9))

	var ids []string
	for _, fd := range h.deletions() {
		ids = append(ids, fd.Spec.RequestID)
	}
	NewWithT(t).Expect(ids).To(ConsistOf("req-1", "req-2", "req-9", "req-9", "", "", "", "", ""))
}

func TestUnknownFieldsAreTolerated(t *testing.T) {
	h := newHarness(t)
	h.config("plain", nil)
	body := `{"EventTime": 1669872112000, "CallbackCommand": "Sns.CallbackFriendDelete", "Extra": {"nested": [1, null, "x"]},
		"PairList": [{"From_Account": "u1", "To_Account": "u2", "Delete_Type": "Delete_Type_Both"}]}`

	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query("NewParam", "1"), body: body}))
	NewWithT(t).Expect(h.deletions()).To(HaveLen(1))
}

func TestLargestCallbackIsStored(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)
	var pairs []string
	for i := range snsv1alpha1.MaxPairs / 2 {
		a, b := fmt.Sprintf("user_%06d", i), fmt.Sprintf("friend_%06d", i)
		pairs = append(pairs, a, b, b, a) // a two-way delete
	}

	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody(pairs...)}))
	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	g.Expect(stored[0].Spec.PairCount).To(Equal(int32(snsv1alpha1.MaxPairs)))
}

func TestAccountsAtTheLimitAreStored(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)
	long := strings.Repeat("é", MaxAccountBytes/2) // 128 bytes, 64 characters
	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody(long, "用户_1", "a", strings.Repeat("z", MaxAccountBytes))}))
	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	g.Expect(stored[0].Spec.Pairs[0]).To(Equal(snsv1alpha1.FriendPair{From: long, To: "用户_1"}))
}

func TestFreeFormParametersAreCutToFit(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	h.config("plain", nil)
	q := query("OptPlatform", strings.Repeat("P", 40), "ClientIP", "2001:db8::1\x00", "RequestId", strings.Repeat("r", 200))

	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: q, body: pairsBody("a", "b")}))
	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	g.Expect(stored[0].Spec.OptPlatform).To(Equal(strings.Repeat("P", 32)))
	g.Expect(stored[0].Spec.ClientIP).To(Equal("2001:db8::1"))
	g.Expect(stored[0].Spec.RequestID).To(BeEmpty(), "a request id the API cannot hold is not recorded")
}

func TestLongConfigNameGetsAValidLabel(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	name := strings.Repeat("long-config-name.", 6) + "x" // 103 characters
	h.config(name, nil)

	expectOK(t, h.do(call{path: Path(h.ns, name), query: query(), body: pairsBody("a", "b")}))
	stored := h.deletions()
	g.Expect(stored).To(HaveLen(1))
	g.Expect(stored[0].Spec.ConfigName).To(Equal(name))
	g.Expect(stored[0].Labels[snsv1alpha1.LabelConfig]).To(Equal(configLabelValue(name)))
	g.Expect(validation.IsValidLabelValue(configLabelValue(name))).To(BeEmpty())
}

func TestSourceRangesAndForwardedFor(t *testing.T) {
	g := NewWithT(t)
	direct := newHarness(t)
	direct.config("loopback", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.AllowedSourceCIDRs = []snsv1alpha1.CIDR{"192.0.2.0/24", "127.0.0.0/8"}
	})
	expectOK(t, direct.do(call{path: Path(direct.ns, "loopback"), query: query(), body: pairsBody("a", "b")}))

	proxied := newHarness(t, func(o *Options) { o.TrustForwardedFor = true })
	proxied.config("egress", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.AllowedSourceCIDRs = []snsv1alpha1.CIDR{"203.0.113.0/24"}
	})
	send := func(xff ...string) reply {
		return proxied.do(call{path: Path(proxied.ns, "egress"), query: query(), body: pairsBody("a", xff[0]), header: http.Header{"X-Forwarded-For": xff}})
	}
	// The proxy appends the address it saw; what the client claimed before
	// it does not count.
	expectOK(t, send("198.51.100.9, 203.0.113.7"))
	expectOK(t, send("10.1.1.1", "203.0.113.8"))
	r := send("203.0.113.7, 198.51.100.9")
	g.Expect(r.status).To(Equal(http.StatusForbidden))
	g.Expect(r.answer.ErrorInfo).To(Equal("source address is not allowed"))
	g.Expect(proxied.deletions()).To(HaveLen(2))
}

func TestBodyLimitFollowsTheOption(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, func(o *Options) { o.MaxBodyBytes = 100 })
	h.config("plain", nil)
	body := pairsBody("a", "b")
	body += strings.Repeat(" ", 100-len(body))

	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: body}))
	r := h.do(call{path: Path(h.ns, "plain"), query: query(), body: body + " "})
	g.Expect(r.status).To(Equal(http.StatusRequestEntityTooLarge))
	g.Expect(r.answer.ErrorInfo).To(Equal("body is larger than 100 bytes"))
	g.Expect(h.deletions()).To(HaveLen(1))
}

// signedQuery is a query signed with the test vector's token at the fixed
// clock's time.
func signedQuery() url.Values {
	return signed(query(), vectorToken, strconv.FormatInt(fixedNow.Unix(), 10))
}
