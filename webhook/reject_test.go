package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// TestRejections sends one bad callback per case and checks what the caller
// sees, that nothing was stored, and the one log line that says why.
func TestRejections(t *testing.T) {
	h := newHarness(t)
	h.secret("im-token", "token", vectorToken)
	auth := &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "token"}}
	h.config("plain", nil)
	h.config("signed", func(c *snsv1alpha1.CallbackConfig) { c.Spec.Auth = auth.DeepCopy() })
	h.config("suspended", func(c *snsv1alpha1.CallbackConfig) { c.Spec.Suspend = true })
	h.config("ranged", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.AllowedSourceCIDRs = []snsv1alpha1.CIDR{"192.0.2.0/24", "2001:db8::/32"}
	})
	h.config("no-secret", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "absent", Key: "token"}}
	})
	h.config("wrong-key", func(c *snsv1alpha1.CallbackConfig) {
		c.Spec.Auth = &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "im-token", Key: "other"}}
	})

	plain, signedPath := Path(h.ns, "plain"), Path(h.ns, "signed")
	good := pairsBody("alice", "bob")
	now := strconv.FormatInt(fixedNow.Unix(), 10)
	without := func(q url.Values, keys ...string) url.Values {
		for _, k := range keys {
			q.Del(k)
		}
		return q
	}
	with := func(q url.Values, kv ...string) url.Values {
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q
	}
	bodyWith := func(pairList string) string {
		return `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":` + pairList + `}`
	}
	var tooMany []string
	for i := range snsv1alpha1.MaxPairs + 1 {
		tooMany = append(tooMany, "a", strconv.Itoa(i))
	}

	cases := []struct {
		name   string
		call   call
		status int
		info   string
	}{
		// Routing and the config.
		{"path outside /callbacks", call{path: "/callback", query: query(), body: good}, 404, "unknown path: callbacks go to /callbacks/<namespace>/<name>"},
		{"path without a name", call{path: "/callbacks/" + h.ns, query: query(), body: good}, 404, "unknown path: callbacks go to /callbacks/<namespace>/<name>"},
		{"path with an extra segment", call{path: plain + "/x", query: query(), body: good}, 404, "unknown path: callbacks go to /callbacks/<namespace>/<name>"},
		{"path with an invalid namespace", call{path: "/callbacks/Not_A_Namespace/plain", query: query(), body: good}, 404, "unknown path: callbacks go to /callbacks/<namespace>/<name>"},
		{"no such config", call{path: Path(h.ns, "absent"), query: query(), body: good}, 404, "no CallbackConfig at this path"},
		{"config in another namespace", call{path: Path("default", "plain"), query: query(), body: good}, 404, "no CallbackConfig at this path"},
		{"suspended config", call{path: Path(h.ns, "suspended"), query: query(), body: good}, 503, "CallbackConfig is suspended"},
		{"suspended comes before the method", call{method: http.MethodGet, path: Path(h.ns, "suspended"), query: query()}, 503, "CallbackConfig is suspended"},

		// Source address.
		{"source outside the ranges", call{path: Path(h.ns, "ranged"), query: query(), body: good}, 403, "source address is not allowed"},
		{"X-Forwarded-For not trusted by default", call{path: Path(h.ns, "ranged"), query: query(), body: good, header: http.Header{"X-Forwarded-For": {"192.0.2.10"}}}, 403, "source address is not allowed"},
		{"source comes before the method", call{method: http.MethodGet, path: Path(h.ns, "ranged"), query: query()}, 403, "source address is not allowed"},

		// Method.
		{"GET", call{method: http.MethodGet, path: plain, query: query()}, 405, "method must be POST"},
		{"PUT", call{method: http.MethodPut, path: plain, query: query(), body: good}, 405, "method must be POST"},
		{"method comes before SdkAppid", call{method: http.MethodGet, path: plain, query: with(query(), "SdkAppid", "1")}, 405, "method must be POST"},

		// The query string.
		{"query with a bad escape in a repeated key", call{path: plain, rawQuery: query().Encode() + "&SdkAppid=%zz", body: good}, 400, "query string does not parse"},
		{"query with a bad escape in another key", call{path: plain, rawQuery: query().Encode() + "&x=%", body: good}, 400, "query string does not parse"},
		{"query with a semicolon", call{path: plain, rawQuery: query().Encode() + ";SdkAppid=1400000002", body: good}, 400, "query string does not parse"},

		// SdkAppid.
		{"SdkAppid missing", call{path: plain, query: without(query(), "SdkAppid"), body: good}, 403, "SdkAppid does not match the CallbackConfig"},
		{"SdkAppid of another app", call{path: plain, query: with(query(), "SdkAppid", "1400000002"), body: good}, 403, "SdkAppid does not match the CallbackConfig"},
		{"SdkAppid given twice", call{path: plain, query: func() url.Values { q := query(); q.Add("SdkAppid", "1400000002"); return q }(), body: good}, 403, "SdkAppid does not match the CallbackConfig"},
		{"SdkAppid comes before Sign", call{path: signedPath, query: with(query(), "SdkAppid", "9"), body: good}, 403, "SdkAppid does not match the CallbackConfig"},

		// Signature and time.
		{"Sign missing", call{path: signedPath, query: without(signedQuery(), "Sign"), body: good}, 401, "Sign and RequestTime are required"},
		{"RequestTime missing", call{path: signedPath, query: without(signedQuery(), "RequestTime"), body: good}, 401, "Sign and RequestTime are required"},
		{"Sign made with another token", call{path: signedPath, query: signed(query(), "yyyyxxxx", now), body: good}, 401, "Sign does not match"},
		{"Sign in upper case", call{path: signedPath, query: with(signedQuery(), "Sign", strings.ToUpper(sign(vectorToken, now))), body: good}, 401, "Sign does not match"},
		{"RequestTime changed after signing", call{path: signedPath, query: with(signedQuery(), "RequestTime", strconv.FormatInt(fixedNow.Unix()+1, 10)), body: good}, 401, "Sign does not match"},
		{"RequestTime not a number", call{path: signedPath, query: signed(query(), vectorToken, "yesterday"), body: good}, 401, "RequestTime must be Unix seconds"},
		{"RequestTime 61s old", call{path: signedPath, query: signed(query(), vectorToken, strconv.FormatInt(fixedNow.Unix()-61, 10)), body: good}, 401, "RequestTime is more than 1m0s from the receiver's clock"},
		{"RequestTime 61s ahead", call{path: signedPath, query: signed(query(), vectorToken, strconv.FormatInt(fixedNow.Unix()+61, 10)), body: good}, 401, "RequestTime is more than 1m0s from the receiver's clock"},
		{"token Secret missing", call{path: Path(h.ns, "no-secret"), query: signedQuery(), body: good}, 503, "callback authentication token is unavailable"},
		{"token Secret lacks the key", call{path: Path(h.ns, "wrong-key"), query: signedQuery(), body: good}, 503, "callback authentication token is unavailable"},
		{"no Sign to a config whose Secret is missing", call{path: Path(h.ns, "no-secret"), query: query(), body: good}, 401, "Sign and RequestTime are required"},
		{"stale RequestTime to a config whose Secret is missing", call{path: Path(h.ns, "no-secret"), query: signed(query(), vectorToken, strconv.FormatInt(fixedNow.Unix()-61, 10)), body: good}, 401, "RequestTime is more than 1m0s from the receiver's clock"},
		{"Sign not hex to a config whose Secret is missing", call{path: Path(h.ns, "no-secret"), query: with(signedQuery(), "Sign", "junk"), body: good}, 401, "Sign does not match"},
		{"Sign comes before contenttype", call{path: signedPath, query: with(signed(query(), "other", now), "contenttype", "xml"), body: good}, 401, "Sign does not match"},

		// contenttype and size.
		{"contenttype missing", call{path: plain, query: without(query(), "contenttype"), body: good}, 400, "contenttype must be json"},
		{"contenttype xml", call{path: plain, query: with(query(), "contenttype", "xml"), body: good}, 400, "contenttype must be json"},
		{"contenttype comes before the body", call{path: plain, query: with(query(), "contenttype", "form"), body: "not json"}, 400, "contenttype must be json"},
		{"body over 1 MiB", call{path: plain, query: query(), body: good + strings.Repeat(" ", 1<<20)}, 413, "body is larger than 1048576 bytes"},
		{"body over 1 MiB without Content-Length", call{path: plain, query: query(), body: good + strings.Repeat(" ", 1<<20), chunked: true}, 413, "body is larger than 1048576 bytes"},

		// The body as JSON.
		{"empty body", call{path: plain, query: query()}, 400, "body is not valid JSON"},
		{"body not JSON", call{path: plain, query: query(), body: "CallbackCommand=Sns.CallbackFriendDelete"}, 400, "body is not valid JSON"},
		{"body cut short", call{path: plain, query: query(), body: good[:len(good)-2]}, 400, "body is not valid JSON"},
		{"body with trailing data", call{path: plain, query: query(), body: good + "{}"}, 400, "body is not valid JSON"},
		{"body nested 33 deep", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"alice","To_Account":"bob","x":` + strings.Repeat("[", 30) + strings.Repeat("]", 30) + `}]`)}, 400, "body nests arrays and objects more than 32 deep"},
		{"brackets in strings are not nesting", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"alice","x":"\"` + strings.Repeat("[", 40) + `"}]`)}, 400, "PairList[0].To_Account is missing"},
		{"body is an array", call{path: plain, query: query(), body: "[" + good + "]"}, 400, "body is not a JSON object"},
		{"body is null", call{path: plain, query: query(), body: "null"}, 400, "body is not a JSON object"},
		{"body not UTF-8", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"ali` + "\xff" + `ce","To_Account":"bob"}]`)}, 400, "body is not valid UTF-8"},

		// Member names given twice: each decoder makes something else of them.
		{"PairList twice", call{path: plain, query: query(), body: `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a","To_Account":"b"}],"PairList":[{"From_Account":"c"}]}`}, 400, "body names a member twice in one object"},
		{"CallbackCommand twice", call{path: plain, query: query(), body: `{"CallbackCommand":"Sns.CallbackFriendAdd","CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a","To_Account":"b"}]}`}, 400, "body names a member twice in one object"},
		{"From_Account twice in a pair", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"a","To_Account":"b","From_Account":"c"}]`)}, 400, "body names a member twice in one object"},
		{"a name repeated through an escape", call{path: plain, query: query(), body: `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a","To_Account":"b"}],"Pair\u004cist":[]}`}, 400, "body names a member twice in one object"},
		{"a repeated name in an unknown member", call{path: plain, query: query(), body: `{"Extra":{"x":1,"x":2},"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a","To_Account":"b"}]}`}, 400, "body names a member twice in one object"},
		{"a repeated name after a bad item", call{path: plain, query: query(), body: bodyWith(`[1,{"a":1,"a":2}]`)}, 400, "body names a member twice in one object"},

		// CallbackCommand.
		{"body command of another callback", call{path: plain, query: query(), body: strings.Replace(good, "Sns.CallbackFriendDelete", "Sns.CallbackFriendAdd", 1)}, 400, "CallbackCommand in the body must be Sns.CallbackFriendDelete"},
		{"body command missing", call{path: plain, query: query(), body: `{"PairList":[{"From_Account":"a","To_Account":"b"}]}`}, 400, "CallbackCommand in the body must be Sns.CallbackFriendDelete"},
		{"body command in another case", call{path: plain, query: query(), body: strings.Replace(good, "CallbackCommand", "callbackcommand", 1)}, 400, "CallbackCommand in the body must be Sns.CallbackFriendDelete"},
		{"body command not a string", call{path: plain, query: query(), body: `{"CallbackCommand":1,"PairList":[{"From_Account":"a","To_Account":"b"}]}`}, 400, "CallbackCommand in the body must be Sns.CallbackFriendDelete"},
		{"query command of another callback", call{path: plain, query: with(query(), "CallbackCommand", "Sns.CallbackFriendAdd"), body: good}, 400, "CallbackCommand in the query must be Sns.CallbackFriendDelete"},
		{"query command missing", call{path: plain, query: without(query(), "CallbackCommand"), body: good}, 400, "CallbackCommand in the query must be Sns.CallbackFriendDelete"},

		// PairList.
		{"PairList missing", call{path: plain, query: query(), body: `{"CallbackCommand":"Sns.CallbackFriendDelete"}`}, 400, "PairList is missing"},
		{"PairList null", call{path: plain, query: query(), body: bodyWith("null")}, 400, "PairList is missing"},
		{"PairList empty", call{path: plain, query: query(), body: bodyWith("[]")}, 400, "PairList is empty"},
		{"PairList an object", call{path: plain, query: query(), body: bodyWith(`{"From_Account":"a","To_Account":"b"}`)}, 400, "PairList must be an array"},
		{"PairList item a string", call{path: plain, query: query(), body: bodyWith(`["a->b"]`)}, 400, "PairList[0] must be an object"},
		{"more than 2000 distinct pairs", call{path: plain, query: query(), body: pairsBody(tooMany...)}, 400, "PairList has more than 2000 distinct pairs"},

		// The object the body would make.
		{"accounts JSON escapes six-fold", call{path: plain, query: query(), body: escapingBody()}, 413, "the FriendDeletion would be larger than the 1048576 bytes the receiver stores as one object: send fewer pairs per callback"},

		// Accounts.
		{"From_Account empty", call{path: plain, query: query(), body: pairsBody("", "bob")}, 400, "PairList[0].From_Account is empty"},
		{"To_Account missing", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"a","To_Account":"b"},{"From_Account":"a"}]`)}, 400, "PairList[1].To_Account is missing"},
		{"account key in another case", call{path: plain, query: query(), body: bodyWith(`[{"from_account":"a","To_Account":"b"}]`)}, 400, "PairList[0].From_Account is missing"},
		{"From_Account a number", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":42,"To_Account":"b"}]`)}, 400, "PairList[0].From_Account must be a string"},
		{"To_Account null", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"a","To_Account":null}]`)}, 400, "PairList[0].To_Account must be a string"},
		{"To_Account over 128 bytes", call{path: plain, query: query(), body: pairsBody("alice", strings.Repeat("é", 65))}, 400, "PairList[0].To_Account is longer than 128 bytes"},
		{"From_Account with a control character", call{path: plain, query: query(), body: pairsBody("ali\u0007ce", "bob")}, 400, "PairList[0].From_Account contains a control character (U+0007)"},
		{"To_Account with a C1 control character", call{path: plain, query: query(), body: pairsBody("alice", "bo\u0085b")}, 400, "PairList[0].To_Account contains a control character (U+0085)"},
		{"From_Account with a zero-width space", call{path: plain, query: query(), body: pairsBody("ali\u200bce", "bob")}, 400, "PairList[0].From_Account contains an invisible format character (U+200B)"},
		{"To_Account with a right-to-left override", call{path: plain, query: query(), body: pairsBody("alice", "\u202ebob")}, 400, "PairList[0].To_Account contains an invisible format character (U+202E)"},
		{"To_Account with a directional isolate", call{path: plain, query: query(), body: pairsBody("alice", "bob\u2066")}, 400, "PairList[0].To_Account contains an invisible format character (U+2066)"},
		{"From_Account with a byte order mark", call{path: plain, query: query(), body: pairsBody("\ufeffalice", "bob")}, 400, "PairList[0].From_Account contains an invisible format character (U+FEFF)"},
		{"From_Account with a soft hyphen", call{path: plain, query: query(), body: pairsBody("ali\u00adce", "bob")}, 400, "PairList[0].From_Account contains an invisible format character (U+00AD)"},
		{"To_Account with a line separator", call{path: plain, query: query(), body: pairsBody("alice", "b\u2028ob")}, 400, "PairList[0].To_Account contains a line or paragraph separator (U+2028)"},
		{"To_Account with a paragraph separator", call{path: plain, query: query(), body: pairsBody("alice", "b\u2029ob")}, 400, "PairList[0].To_Account contains a line or paragraph separator (U+2029)"},
		{"From_Account with a no-break space", call{path: plain, query: query(), body: pairsBody("ali\u00a0ce", "bob")}, 400, "PairList[0].From_Account contains a space other than U+0020 (U+00A0)"},
		{"From_Account with an ideographic space", call{path: plain, query: query(), body: pairsBody("ali\u3000ce", "bob")}, 400, "PairList[0].From_Account contains a space other than U+0020 (U+3000)"},
		{"From_Account with a Hangul filler", call{path: plain, query: query(), body: pairsBody("\u3164", "bob")}, 400, "PairList[0].From_Account contains an invisible character (U+3164)"},
		{"To_Account with a variation selector", call{path: plain, query: query(), body: pairsBody("alice", "bob\ufe0f")}, 400, "PairList[0].To_Account contains an invisible character (U+FE0F)"},
		{"To_Account with a private-use character", call{path: plain, query: query(), body: pairsBody("alice", "bob\ue000")}, 400, "PairList[0].To_Account contains a private-use character (U+E000)"},
		{"To_Account with a noncharacter", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"alice","To_Account":"bob\uffff"}]`)}, 400, "PairList[0].To_Account contains a noncharacter (U+FFFF)"},
		{"From_Account with an unassigned code point", call{path: plain, query: query(), body: pairsBody("ali\u0378ce", "bob")}, 400, "PairList[0].From_Account contains an unassigned code point (U+0378)"},
		{"To_Account with an unassigned code point in another plane", call{path: plain, query: query(), body: pairsBody("alice", "bob\U0001FFFD")}, 400, "PairList[0].To_Account contains an unassigned code point (U+1FFFD)"},
		{"To_Account with an escaped unassigned code point", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"alice","To_Account":"\u0380bob"}]`)}, 400, "PairList[0].To_Account contains an unassigned code point (U+0380)"},
		{"From_Account with a trailing space", call{path: plain, query: query(), body: pairsBody("alice ", "bob")}, 400, "PairList[0].From_Account starts or ends with a space"},
		{"To_Account with a leading space", call{path: plain, query: query(), body: pairsBody("alice", " bob")}, 400, "PairList[0].To_Account starts or ends with a space"},
		{"From_Account a lone surrogate", call{path: plain, query: query(), body: bodyWith(`[{"From_Account":"\ud800","To_Account":"b"}]`)}, 400, "PairList[0].From_Account is not valid UTF-8"},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	h.logs.take()

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			r := h.do(tc.call)

			g.Expect(r.status).To(Equal(tc.status))
			g.Expect(r.answer).To(Equal(answer{ActionStatus: "FAIL", ErrorCode: 1, ErrorInfo: tc.info}))
			g.Expect(r.header.Get("Content-Type")).To(Equal("application/json"))
			if tc.status == http.StatusMethodNotAllowed {
				g.Expect(r.header.Get("Allow")).To(Equal(http.MethodPost))
			}
			g.Expect(h.deletions()).To(BeEmpty())

			lines := h.logs.take()
			g.Expect(lines).To(HaveLen(1))
			g.Expect(lines[0]).To(HaveKeyWithValue("msg", "callback rejected"))
			g.Expect(lines[0]).To(HaveKeyWithValue("errorInfo", tc.info))
			g.Expect(lines[0]).To(HaveKeyWithValue("status", float64(tc.status)))
			g.Expect(lines[0]).To(HaveKey("reason"))
			g.Expect(fmt.Sprint(lines[0])).NotTo(ContainSubstring(vectorToken), "the log never carries the token")
			g.Expect(fmt.Sprint(lines[0])).NotTo(ContainSubstring("alice"), "the log never carries the body")
		})
	}

	// The callbacks metric counts every rejection, under its config when
	// there is one and under none when the path names no config.
	failed := map[string]float64{}
	families, err := h.registry.Gather()
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	for _, mf := range families {
		if mf.GetName() != "friend_deletion_receiver_callbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			NewWithT(t).Expect(labels["result"]).To(Equal("FAIL"))
			failed[labels["config"]+"/"+labels["reason"]] += m.GetCounter().GetValue()
		}
	}
	var total float64
	for _, v := range failed {
		total += v
	}
	NewWithT(t).Expect(total).To(Equal(float64(len(cases))))
	NewWithT(t).Expect(failed).To(HaveKeyWithValue("/"+ReasonUnknownPath, 4.0))
	NewWithT(t).Expect(failed).To(HaveKeyWithValue("/"+ReasonConfigNotFound, 2.0))
	NewWithT(t).Expect(failed).To(HaveKeyWithValue("signed/"+ReasonSignMismatch, 4.0))
	NewWithT(t).Expect(failed).To(HaveKeyWithValue("plain/"+ReasonDuplicateMember, 6.0))
	NewWithT(t).Expect(failed).To(HaveKeyWithValue("plain/"+ReasonInvalidQuery, 3.0))
	NewWithT(t).Expect(failed).To(HaveKeyWithValue("plain/"+ReasonObjectTooLarge, 1.0))
}

// escapingBody is a body well under the size limit, with 2000 pairs that
// pass every rule, whose accounts are made of characters JSON escapes as
// six bytes: the object it would make is over 2 MiB.
func escapingBody() string {
	type pair struct {
		From string `json:"From_Account"`
		To   string `json:"To_Account"`
	}
	list := make([]pair, 0, snsv1alpha1.MaxPairs)
	for i := range snsv1alpha1.MaxPairs {
		list = append(list, pair{From: strings.Repeat("<", 120) + fmt.Sprintf("%08d", i), To: strings.Repeat("&", 128)})
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"CallbackCommand": CallbackCommand, "PairList": list}); err != nil {
		panic(err)
	}
	if b.Len() >= 1<<20 {
		panic("the escaping body must fit the body limit")
	}
	return b.String()
}
