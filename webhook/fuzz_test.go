package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

const fuzzMaxBody = 64 << 10

// fuzzConfigs are the configs each fuzzed request is checked against: one
// without auth, so that inputs reach the body parser, one with auth and one
// with source ranges.
var fuzzConfigs = []*snsv1alpha1.CallbackConfig{
	{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain", UID: "uid-plain"},
		Spec:       snsv1alpha1.CallbackConfigSpec{SDKAppID: testAppID},
	},
	{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "signed", UID: "uid-signed"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: testAppID, Auth: &snsv1alpha1.CallbackAuth{
			TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "t", Key: "t"},
		}},
	},
	{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ranged", UID: "uid-ranged"},
		Spec:       snsv1alpha1.CallbackConfigSpec{SDKAppID: testAppID, AllowedSourceCIDRs: []snsv1alpha1.CIDR{"203.0.113.0/24", "::ffff:198.51.100.0/120"}},
	},
}

// statuses a rejection may carry.
var rejectionStatuses = []int{400, 401, 403, 405, 413, 503}

// FuzzCheck feeds arbitrary methods, query strings, bodies and
// X-Forwarded-For headers to the acceptance rules. Whatever comes in, the
// rules do not panic, answer a status and reason from the fixed sets, never
// put the token in ErrorInfo, and accept only what the FriendDeletion API
// can store: a valid name and labels, 1 to 2000 distinct valid pairs, and
// free-form fields within their lengths.
func FuzzCheck(f *testing.F) {
	plainQuery := query().Encode()
	signedQuery := query("RequestTime", vectorRequestTime, "Sign", vectorSign).Encode()
	f.Add("POST", plainQuery, []byte(seedBody), "")
	f.Add("POST", signedQuery, []byte(seedBody), "203.0.113.9")
	f.Add("POST", plainQuery+"&RequestId=abc", []byte(pairsBody("a", "b", "a", "b", "b", "a")), "")
	f.Add("POST", plainQuery, []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"\ud800","To_Account":"x"}]}`), "")
	f.Add("POST", plainQuery, []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a\u0000","To_Account":"x"}],"EventTime":1}`), "")
	f.Add("POST", plainQuery, []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":null}`), "")
	f.Add("POST", plainQuery, []byte(`[]`), "")
	f.Add("POST", plainQuery, []byte("{\"CallbackCommand\":\"Sns.CallbackFriendDelete\",\"PairList\":[{\"From_Account\":\"\xff\",\"To_Account\":\"x\"}]}"), "")
	f.Add("GET", plainQuery, []byte(nil), "198.51.100.7, 203.0.113.1")
	f.Add("POST", "SdkAppid=1400000001&SdkAppid=1400000001&contenttype=JSON&CallbackCommand=Sns.CallbackFriendDelete&OptPlatform=%00%FF", []byte(seedBody), "[::ffff:198.51.100.3]:443")
	f.Add("POST", "%zz&"+plainQuery+"&ClientIP="+strings.Repeat("9", 100), []byte(seedBody), "")
	f.Add("POST", plainQuery, []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[null]}`), "")
	f.Add("POST", plainQuery, []byte(`{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a\u0041","To_Account":"b","to_account":"c"}],"PairList":[]}`), "")
	f.Add("POST", plainQuery, []byte(` {"callbackcommand":"Sns.CallbackFriendDelete","CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"a","To_Account":7}]}`), "")

	tokenFor := func(cfg *snsv1alpha1.CallbackConfig) func() (string, error) {
		return func() (string, error) { return vectorToken, nil }
	}
	f.Fuzz(func(t *testing.T, method, rawQuery string, body []byte, forwardedFor string) {
		if got, want := parseBody(body), referenceParse(body); !samePayload(got, want) {
			t.Fatalf("the body parser and the reference decoder differ:\nparser    %s\nreference %s", describe(got), describe(want))
		}
		q, qerr := url.ParseQuery(rawQuery)
		in := inbound{
			method:       method,
			query:        q,
			queryErr:     qerr,
			remoteAddr:   "127.0.0.1:40000",
			forwardedFor: []string{forwardedFor},
			body: func() ([]byte, *rejection) {
				if len(body) > fuzzMaxBody {
					return nil, reject(http.StatusRequestEntityTooLarge, ReasonBodyTooLarge, "body is too large")
				}
				return body, nil
			},
		}
		for _, cfg := range fuzzConfigs {
			cb, rej := rules{trustForwardedFor: true}.check(cfg, in, tokenFor(cfg), fixedNow)
			if rej != nil {
				checkRejection(t, rej)
				continue
			}
			checkAccepted(t, cfg, cb)
			again, rej := rules{trustForwardedFor: true}.check(cfg, in, tokenFor(cfg), fixedNow)
			if rej != nil || friendDeletionName(cfg.UID, again, fixedNow) != friendDeletionName(cfg.UID, cb, fixedNow) {
				t.Fatalf("checking the same request twice differs: %v", rej)
			}
		}
	})
}

var knownReasons = []string{
	ReasonSuspended, ReasonSourceNotAllowed, ReasonMethodNotAllowed, ReasonSDKAppIDMismatch,
	ReasonTokenUnavailable, ReasonSignMissing, ReasonRequestTimeInvalid, ReasonSignMismatch, ReasonRequestTimeSkew,
	ReasonContentType, ReasonBodyTooLarge, ReasonBodyUnreadable, ReasonInvalidJSON, ReasonCommandMismatch,
	ReasonInvalidPairList, ReasonInvalidAccount, ReasonDuplicateMember, ReasonInvalidQuery,
}

func checkRejection(t *testing.T, rej *rejection) {
	t.Helper()
	if !slices.Contains(rejectionStatuses, rej.status) || !slices.Contains(knownReasons, rej.reason) {
		t.Fatalf("unexpected rejection %v", rej)
	}
	if rej.info == "" || strings.Contains(rej.info, vectorToken) || !utf8.ValidString(rej.info) {
		t.Fatalf("bad ErrorInfo %q", rej.info)
	}
}

func checkAccepted(t *testing.T, cfg *snsv1alpha1.CallbackConfig, cb *callback) {
	t.Helper()
	if n := len(cb.pairs); n < 1 || n > snsv1alpha1.MaxPairs {
		t.Fatalf("accepted %d pairs", n)
	}
	seen := map[snsv1alpha1.FriendPair]bool{}
	for _, p := range cb.pairs {
		if accountProblem(p.From) != "" || accountProblem(p.To) != "" || !utf8.ValidString(p.From) || !utf8.ValidString(p.To) {
			t.Fatalf("accepted a bad pair %q", p)
		}
		if seen[p] {
			t.Fatalf("accepted a duplicate pair %q", p)
		}
		seen[p] = true
	}
	fd := newFriendDeletion(cfg, cb, fixedNow)
	if errs := validation.IsDNS1123Subdomain(fd.Name); len(errs) > 0 || len(fd.Name) > 63 {
		t.Fatalf("bad name %q: %v", fd.Name, errs)
	}
	for k, v := range fd.Labels {
		if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
			t.Fatalf("bad label %s=%q: %v", k, v, errs)
		}
	}
	s := fd.Spec
	if int(s.PairCount) != len(s.Pairs) {
		t.Fatalf("pairCount %d for %d pairs", s.PairCount, len(s.Pairs))
	}
	for name, v := range map[string]struct {
		value string
		max   int
	}{"clientIP": {s.ClientIP, maxClientIPBytes}, "optPlatform": {s.OptPlatform, maxOptPlatformBytes}, "requestID": {s.RequestID, maxRequestIDBytes}} {
		if len(v.value) > v.max || !utf8.ValidString(v.value) || strings.ContainsFunc(v.value, isControl) {
			t.Fatalf("%s %q cannot be stored", name, v.value)
		}
	}
}

func samePayload(a, b payload) bool {
	same := func(x, y *rejection) bool {
		return (x == nil) == (y == nil) && (x == nil || *x == *y)
	}
	return same(a.invalid, b.invalid) && same(a.command, b.command) && same(a.pairsErr, b.pairsErr) && slices.Equal(a.pairs, b.pairs)
}

func describe(p payload) string {
	return fmt.Sprintf("invalid=%v command=%v pairsErr=%v pairs=%q", p.invalid, p.command, p.pairsErr, p.pairs)
}

// referenceParse is what parseBody must answer, written the plain way and
// with another decoder: encoding/json's token stream finds the first syntax
// error or repeated member name in document order, and the checks then read
// the body decoded whole.
func referenceParse(body []byte) payload {
	if !utf8.Valid(body) {
		return payload{invalid: errNotUTF8()}
	}
	if referenceDepth(body) > maxBodyDepth {
		return payload{invalid: errTooDeep()}
	}
	if err := walkNames(body); err != nil {
		return payload{invalid: err}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return payload{invalid: reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not a JSON object")}
	}
	p := payload{command: reject(http.StatusBadRequest, ReasonCommandMismatch, "CallbackCommand in the body must be "+CallbackCommand)}
	var cmd string
	if raw, ok := top["CallbackCommand"]; ok && len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &cmd) == nil && cmd == CallbackCommand {
		p.command = nil
	}
	p.pairs, p.pairsErr = referencePairs(top["PairList"])
	return p
}

// referenceDepth is the most arrays and objects body has open at once: its
// brackets counted after every string literal (a quote, then anything but
// a quote or a backslash, or a backslash and any byte, up to the closing
// quote or the end) is cut out.
func referenceDepth(body []byte) int {
	var outside []byte
	for i := 0; i < len(body); i++ {
		if body[i] != '"' {
			outside = append(outside, body[i])
			continue
		}
		for i++; i < len(body) && body[i] != '"'; i++ {
			if body[i] == '\\' {
				i++
			}
		}
	}
	most, depth := 0, 0
	for _, c := range outside {
		switch c {
		case '[', '{':
			depth++
			most = max(most, depth)
		case ']', '}':
			depth--
		}
	}
	return most
}

// walkNames reads body's tokens and says whether it is one JSON value with
// each member name once per object.
func walkNames(body []byte) *rejection {
	invalid := reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not valid JSON")
	dec := json.NewDecoder(bytes.NewReader(body))
	// names holds, per open container, the member names seen (nil for an
	// array) and whether the next string is a name.
	type frame struct {
		names  map[string]bool
		isName bool
	}
	var stack []*frame
	for started := false; ; started = true {
		if started && len(stack) == 0 {
			// One value read: only white space may follow.
			if _, err := dec.Token(); err != io.EOF {
				return invalid
			}
			break
		}
		tok, err := dec.Token()
		if err != nil {
			return invalid
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.names != nil {
					top.isName = true
				}
				stack = append(stack, &frame{names: map[string]bool{}, isName: true})
				continue
			case '[':
				if top != nil && top.names != nil {
					top.isName = true
				}
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
				continue
			}
		case string:
			if top != nil && top.names != nil && top.isName {
				if top.names[v] {
					return reject(http.StatusBadRequest, ReasonDuplicateMember, "body names a member twice in one object")
				}
				top.names[v] = true
				top.isName = false
				continue
			}
		}
		if top != nil && top.names != nil {
			top.isName = true
		}
	}
	if !json.Valid(body) {
		return invalid
	}
	return nil
}

func referencePairs(raw json.RawMessage) ([]snsv1alpha1.FriendPair, *rejection) {
	if raw == nil || string(raw) == "null" {
		return nil, errPairListMissing()
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList must be an array")
	}
	if len(items) == 0 {
		return nil, errPairListEmpty()
	}
	var pairs []snsv1alpha1.FriendPair
	seen := map[snsv1alpha1.FriendPair]bool{}
	for i, item := range items {
		var members map[string]json.RawMessage
		if len(item) == 0 || item[0] != '{' || json.Unmarshal(item, &members) != nil {
			return nil, notAnObject(i)
		}
		var accounts [2]string
		for j, key := range []string{"From_Account", "To_Account"} {
			v, ok := members[key]
			switch {
			case !ok:
				return nil, rejectf(http.StatusBadRequest, ReasonInvalidAccount, "PairList[%d].%s is missing", i, key)
			case len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &accounts[j]) != nil:
				return nil, rejectf(http.StatusBadRequest, ReasonInvalidAccount, "PairList[%d].%s must be a string", i, key)
			}
			if problem := accountProblem(accounts[j]); problem != "" {
				return nil, rejectf(http.StatusBadRequest, ReasonInvalidAccount, "PairList[%d].%s %s", i, key, problem)
			}
		}
		p := snsv1alpha1.FriendPair{From: accounts[0], To: accounts[1]}
		if seen[p] {
			continue
		}
		if len(pairs) == snsv1alpha1.MaxPairs {
			return nil, rejectf(http.StatusBadRequest, ReasonInvalidPairList, "PairList has more than %d distinct pairs", snsv1alpha1.MaxPairs)
		}
		seen[p] = true
		pairs = append(pairs, p)
	}
	return pairs, nil
}
