package imrest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/internal/imrest"
	"github.com/imcallback/friend-deletion-operator/internal/imrest/imresttest"
)

const (
	appID = "1400000001"
	admin = "administrator"
)

var key = []byte("5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e")

func newClient(srv *imresttest.Server, rps float64) *imrest.Client {
	c := imrest.New(imrest.Config{
		Endpoint: srv.URL, SDKAppID: 1400000001, Identifier: admin,
		HTTP: &http.Client{Timeout: 5 * time.Second}, RequestsPerSecond: rps,
	})
	c.SetKey(key, "1")
	return c
}

func TestUserSigVerifiesIndependently(t *testing.T) {
	sig, err := imrest.UserSig(1400000001, admin, key, time.Now(), imrest.SigLifetime)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(sig, "+/=") {
		t.Errorf("UserSig %q uses the standard base64 alphabet, not Tencent's", sig)
	}
	if code, info := imresttest.CheckUserSig(sig, key, appID, admin); code != 0 {
		t.Errorf("UserSig refused: %d %s", code, info)
	}
	for name, c := range map[string]struct {
		key        []byte
		app, ident string
		want       int
	}{
		"other key":        {[]byte("other"), appID, admin, 70009},
		"other identifier": {key, appID, "someone", 70013},
		"other app":        {key, "1400000002", admin, 70014},
	} {
		if code, _ := imresttest.CheckUserSig(sig, c.key, c.app, c.ident); code != c.want {
			t.Errorf("%s: code %d, want %d", name, code, c.want)
		}
	}
	old, _ := imrest.UserSig(1400000001, admin, key, time.Now().Add(-48*time.Hour), imrest.SigLifetime)
	if code, _ := imresttest.CheckUserSig(old, key, appID, admin); code != 70001 {
		t.Errorf("a UserSig made 48h ago: code %d, want 70001 (expired)", code)
	}
}

func pairs(ps ...string) []snsv1alpha1.FriendPair {
	var out []snsv1alpha1.FriendPair
	for _, p := range ps {
		from, to, _ := strings.Cut(p, ">")
		out = append(out, snsv1alpha1.FriendPair{From: from, To: to})
	}
	return out
}

func unknown(n int) []byte { return []byte(strings.Repeat("?", n)) }

func TestVerifyRecordsEachPairsRelation(t *testing.T) {
	srv := imresttest.NewServer(appID, admin, key)
	defer srv.Close()
	srv.MakeFriends("alice", "bob") // re-added
	srv.AddFriend("alice", "dave")  // alice still has dave
	srv.AddFriend("erin", "alice")  // erin still has alice
	ps := pairs("alice>bob", "bob>alice", "alice>carol", "carol>alice", "alice>dave", "dave>alice", "alice>erin", "frank>gina")
	rel := unknown(len(ps))
	calls, err := imrest.Verify(context.Background(), newClient(srv, 100), ps, rel)
	if err != nil {
		t.Fatal(err)
	}
	if want := "WWNNABBN"; string(rel) != want {
		t.Errorf("relations %s, want %s", rel, want)
	}
	if calls != 2 || len(srv.Calls()) != 2 {
		t.Errorf("%d calls (server saw %d), want 2: alice's five friends and frank's one", calls, len(srv.Calls()))
	}
	if p := srv.Problems(); len(p) > 0 {
		t.Errorf("malformed requests: %q", p)
	}
}

func TestPlan(t *testing.T) {
	for name, c := range map[string]struct {
		pairs []snsv1alpha1.FriendPair
		rel   string
		want  string
	}{
		"one way":           {pairs("a>b", "a>c"), "??", "a:b,c"},
		"both ways once":    {pairs("a>b", "b>a"), "??", "a:b"},
		"busiest account":   {pairs("b>a", "c>a", "d>a"), "???", "a:b,c,d"},
		"answered left out": {pairs("a>b", "a>c", "a>d"), "?N?", "a:b,d"},
		"all answered":      {pairs("a>b"), "W", ""},
		"two froms":         {pairs("a>b", "c>d", "c>e"), "???", "c:d,e a:b"},
	} {
		var got []string
		for _, chk := range imrest.Plan(c.pairs, []byte(c.rel)) {
			got = append(got, chk.From+":"+strings.Join(chk.To, ","))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s: plan %q, want %q", name, strings.Join(got, " "), c.want)
		}
	}
}

// twoWay is the PairList of a two-way delete of user with n friends.
func twoWay(user string, n int) []snsv1alpha1.FriendPair {
	var ps []snsv1alpha1.FriendPair
	for i := range n {
		f := fmt.Sprintf("friend-%04d", i)
		ps = append(ps, snsv1alpha1.FriendPair{From: user, To: f}, snsv1alpha1.FriendPair{From: f, To: user})
	}
	return ps
}

func TestPlanSplitsAtTheRequestLimit(t *testing.T) {
	var ps []snsv1alpha1.FriendPair
	for i := range 2000 {
		ps = append(ps, snsv1alpha1.FriendPair{From: "a", To: fmt.Sprintf("u%04d", i)})
	}
	checks := imrest.Plan(ps, unknown(len(ps)))
	if len(checks) != 2 || len(checks[0].To) != 1000 || len(checks[1].To) != 1000 {
		t.Errorf("2000 accounts of one From_Account: %d checks, want 2 of 1000", len(checks))
	}
	if checks := imrest.Plan(twoWay("a", 1000), unknown(2000)); len(checks) != 1 {
		t.Errorf("a two-way delete of 1000 friends: %d checks, want 1", len(checks))
	}
}

func TestVerifyErrors(t *testing.T) {
	ps := pairs("alice>bob", "carol>dave")
	for name, c := range map[string]struct {
		fail    []imresttest.Failure
		key     []byte
		wantRel string
		check   func(error) bool
	}{
		"HTTP 500": {fail: []imresttest.Failure{imresttest.FailHTTP500}, wantRel: "??", check: func(err error) bool { return strings.Contains(err.Error(), "HTTP 500") }},
		"ErrorCode": {fail: []imresttest.Failure{imresttest.FailErrorCode}, wantRel: "??", check: func(err error) bool {
			var a *imrest.APIError
			return errors.As(err, &a) && a.Code == 30001 && !a.Auth()
		}},
		"item ResultCode":   {fail: []imresttest.Failure{imresttest.FailItems}, wantRel: "?N", check: imrest.IsItemsFailed},
		"second call fails": {fail: []imresttest.Failure{0, imresttest.FailHTTP500}, wantRel: "N?", check: func(err error) bool { return strings.Contains(err.Error(), "HTTP 500") }},
		"wrong key":         {key: []byte("not the key"), wantRel: "??", check: imrest.IsAuth},
	} {
		t.Run(name, func(t *testing.T) {
			srv := imresttest.NewServer(appID, admin, key)
			defer srv.Close()
			srv.FailNext(c.fail...)
			cl := newClient(srv, 100)
			if c.key != nil {
				cl.SetKey(c.key, "2")
			}
			rel := unknown(2)
			_, err := imrest.Verify(context.Background(), cl, ps, rel)
			if err == nil || !c.check(err) {
				t.Fatalf("error %v is not the expected kind", err)
			}
			if string(rel) != c.wantRel {
				t.Errorf("relations %s, want %s", rel, c.wantRel)
			}
			sig, _ := imrest.UserSig(1400000001, admin, key, time.Now(), imrest.SigLifetime)
			if msg := err.Error(); strings.Contains(msg, string(key)) || strings.Contains(msg, sig[:20]) || strings.Contains(msg, "usersig") {
				t.Errorf("error message gives away a secret: %s", msg)
			}
			// The pairs not yet answered are asked about again.
			if _, err := imrest.Verify(context.Background(), newClient(srv, 100), ps, rel); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if string(rel) != "NN" {
				t.Errorf("after the retry, relations %s, want NN", rel)
			}
		})
	}
}

func TestTransportErrorHidesTheUserSig(t *testing.T) {
	cl := imrest.New(imrest.Config{Endpoint: "http://127.0.0.1:1", SDKAppID: 1400000001, Identifier: admin, RequestsPerSecond: 100})
	cl.SetKey(key, "1")
	_, err := cl.FriendCheck(context.Background(), "alice", []string{"bob"})
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	if strings.Contains(err.Error(), "usersig") || strings.Contains(err.Error(), "?") {
		t.Errorf("transport error quotes the query: %s", err)
	}
}

func TestUserSigCachedUntilTheKeyChanges(t *testing.T) {
	srv := imresttest.NewServer(appID, admin, key)
	defer srv.Close()
	cl := newClient(srv, 100)
	ps := pairs("alice>bob")
	if _, err := imrest.Verify(context.Background(), cl, ps, unknown(1)); err != nil {
		t.Fatal(err)
	}
	newKey := []byte("rotated")
	srv.SetKey(newKey)
	if _, err := imrest.Verify(context.Background(), cl, ps, unknown(1)); !imrest.IsAuth(err) {
		t.Fatalf("with the old key: %v, want an auth error", err)
	}
	cl.SetKey(newKey, "2")
	if _, err := imrest.Verify(context.Background(), cl, ps, unknown(1)); err != nil {
		t.Fatalf("after SetKey with the rotated key: %v", err)
	}
}

func TestRateLimitedCallsSayWhenToComeBack(t *testing.T) {
	srv := imresttest.NewServer(appID, admin, key)
	defer srv.Close()
	cl := imrest.New(imrest.Config{Endpoint: srv.URL, SDKAppID: 1400000001, Identifier: admin, RequestsPerSecond: 1, MaxWait: 10 * time.Millisecond})
	cl.SetKey(key, "1")
	if _, err := cl.FriendCheck(context.Background(), "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	_, err := cl.FriendCheck(context.Background(), "alice", []string{"bob"})
	var rl *imrest.RateLimitedError
	if !errors.As(err, &rl) || rl.After <= 10*time.Millisecond {
		t.Fatalf("second call within a second at 1/s: %v, want a RateLimitedError", err)
	}
	if n := len(srv.Calls()); n != 1 {
		t.Errorf("the server saw %d calls, want 1", n)
	}
}

func TestUserSigReusedUntilAnHourBeforeExpiry(t *testing.T) {
	srv := imresttest.NewServer(appID, admin, key)
	defer srv.Close()
	// The client's clock starts 23 hours back, so that the fake server,
	// on the real clock, takes every UserSig as current.
	now := time.Now().Add(-23 * time.Hour)
	cl := imrest.New(imrest.Config{
		Endpoint: srv.URL, SDKAppID: 1400000001, Identifier: admin, RequestsPerSecond: 100,
		Now: func() time.Time { return now },
	})
	cl.SetKey(key, "1")
	call := func() {
		t.Helper()
		if _, err := cl.FriendCheck(context.Background(), "alice", []string{"bob"}); err != nil {
			t.Fatal(err)
		}
	}
	call()
	now = now.Add(imrest.SigLifetime - time.Hour - time.Minute)
	call() // still well within its lifetime: the same UserSig
	now = now.Add(2 * time.Minute)
	call() // within an hour of expiry: a new one
	now = now.Add(time.Second)
	cl.SetKey(key, "1")
	call() // the same Secret version: kept
	cl.SetKey(key, "2")
	call() // the Secret changed: a new one, even with the same key
	sigs := srv.UserSigs()
	if len(sigs) != 5 {
		t.Fatalf("%d calls, want 5", len(sigs))
	}
	same := []bool{sigs[0] == sigs[1], sigs[1] == sigs[2], sigs[2] == sigs[3], sigs[3] == sigs[4]}
	if want := []bool{true, false, true, false}; fmt.Sprint(same) != fmt.Sprint(want) {
		t.Errorf("UserSig reuse between calls %v, want %v", same, want)
	}
}
