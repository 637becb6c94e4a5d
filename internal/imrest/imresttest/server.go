// Package imresttest is a fake Tencent Cloud IM REST API for tests: an
// httptest server that checks every request the way the IM backend does
// (query string, administrator, UserSig) and answers v4/sns/friend_check
// from a table of friendships. It verifies the UserSig with its own
// decoder (base64 variant, zlib, JSON, HMAC-SHA256), written apart from
// the production code it checks.
package imresttest

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Failure is a way the next answers fail.
type Failure int

const (
	// FailHTTP500 answers HTTP 500.
	FailHTTP500 Failure = iota + 1
	// FailErrorCode answers ActionStatus FAIL with ErrorCode 30001.
	FailErrorCode
	// FailItems answers every item with ResultCode 30006 and lists it in
	// Fail_Account, as the documented example of a failed check.
	FailItems
)

// Server is a fake IM REST API for one app.
type Server struct {
	*httptest.Server
	SDKAppID   string
	Identifier string

	mu       sync.Mutex
	key      []byte
	friends  map[[2]string]bool // {a, b}: a has b in its friend list
	fail     []Failure
	calls    []time.Time
	sigs     []string
	accounts int
	problems []string
}

// NewServer starts a fake IM REST API for the app, accepting UserSigs
// made with key. Close it when done.
func NewServer(sdkAppID, identifier string, key []byte) *Server {
	s := &Server{SDKAppID: sdkAppID, Identifier: identifier, key: bytes.Clone(key), friends: map[[2]string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// SetKey changes the secret key the server checks UserSigs with.
func (s *Server) SetKey(key []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = bytes.Clone(key)
}

// AddFriend puts b in a's friend list (one way).
func (s *Server) AddFriend(a, b string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.friends[[2]string{a, b}] = true
}

// MakeFriends makes a and b friends both ways.
func (s *Server) MakeFriends(a, b string) {
	s.AddFriend(a, b)
	s.AddFriend(b, a)
}

// FailNext makes the next answers fail, one per Failure, in order.
func (s *Server) FailNext(f ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, f...)
}

// Calls returns the times of the friend_check calls that passed the
// checks, failed answers included.
func (s *Server) Calls() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls...)
}

// UserSigs returns the usersig of each call, in order.
func (s *Server) UserSigs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sigs...)
}

// Accounts returns how many To_Account the calls carried in all.
func (s *Server) Accounts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts
}

// Problems lists the requests the server refused as malformed: a wrong
// path, method, query or body. A correct client causes none.
func (s *Server) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

func (s *Server) problem(w http.ResponseWriter, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.problems = append(s.problems, msg)
	s.mu.Unlock()
	http.Error(w, msg, http.StatusBadRequest)
}

type answer struct {
	ActionStatus string   `json:"ActionStatus"`
	ErrorCode    int      `json:"ErrorCode"`
	ErrorInfo    string   `json:"ErrorInfo"`
	InfoItem     []item   `json:"InfoItem,omitempty"`
	FailAccount  []string `json:"Fail_Account,omitempty"`
}

type item struct {
	To         string `json:"To_Account"`
	Relation   string `json:"Relation"`
	ResultCode int    `json:"ResultCode"`
	ResultInfo string `json:"ResultInfo"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v4/sns/friend_check" {
		s.problem(w, "unexpected %s %s", r.Method, r.URL.Path)
		return
	}
	q := r.URL.Query()
	if q.Get("sdkappid") != s.SDKAppID || q.Get("identifier") != s.Identifier || q.Get("contenttype") != "json" {
		s.problem(w, "query sdkappid=%q identifier=%q contenttype=%q", q.Get("sdkappid"), q.Get("identifier"), q.Get("contenttype"))
		return
	}
	if _, err := strconv.ParseUint(q.Get("random"), 10, 32); err != nil {
		s.problem(w, "random %q is not a 32-bit unsigned number", q.Get("random"))
		return
	}
	var req struct {
		From      string   `json:"From_Account"`
		To        []string `json:"To_Account"`
		CheckType string   `json:"CheckType"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil || req.From == "" || len(req.To) == 0 || len(req.To) > 1000 || req.CheckType != "CheckResult_Type_Both" {
		s.problem(w, "body %.200s", body)
		return
	}

	s.mu.Lock()
	key := bytes.Clone(s.key)
	s.calls = append(s.calls, time.Now())
	s.sigs = append(s.sigs, q.Get("usersig"))
	s.accounts += len(req.To)
	var f Failure
	if len(s.fail) > 0 {
		f, s.fail = s.fail[0], s.fail[1:]
	}
	s.mu.Unlock()

	if code, info := CheckUserSig(q.Get("usersig"), key, s.SDKAppID, s.Identifier); code != 0 {
		writeJSON(w, answer{ActionStatus: "FAIL", ErrorCode: code, ErrorInfo: info})
		return
	}
	switch f {
	case FailHTTP500:
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	case FailErrorCode:
		writeJSON(w, answer{ActionStatus: "FAIL", ErrorCode: 30001, ErrorInfo: "Err_SNS_FriendCheck_Invalid_Param"})
		return
	}
	ans := answer{ActionStatus: "OK"}
	s.mu.Lock()
	for _, to := range req.To {
		it := item{To: to, Relation: relation(s.friends[[2]string{req.From, to}], s.friends[[2]string{to, req.From}])}
		if f == FailItems {
			it.Relation, it.ResultCode, it.ResultInfo = "CheckResult_Type_NoRelation", 30006, "Err_SNS_FriendCheck_Check_Relation_Exec_Task_Fail"
			ans.FailAccount = append(ans.FailAccount, to)
		}
		ans.InfoItem = append(ans.InfoItem, it)
	}
	s.mu.Unlock()
	writeJSON(w, ans)
}

func relation(aHasB, bHasA bool) string {
	switch {
	case aHasB && bHasA:
		return "CheckResult_Type_BothWay"
	case aHasB:
		return "CheckResult_Type_AWithB"
	case bHasA:
		return "CheckResult_Type_BWithA"
	}
	return "CheckResult_Type_NoRelation"
}

// CheckUserSig verifies a UserSig as the IM backend does, returning 0 or an
// error code of the UserSig family with its info.
func CheckUserSig(sig string, key []byte, sdkAppID, identifier string) (int, string) {
	if sig == "" {
		return 70002, "UserSig is empty"
	}
	std := strings.NewReplacer("*", "+", "-", "/", "_", "=").Replace(sig)
	compressed, err := base64.StdEncoding.DecodeString(std)
	if err != nil {
		return 70005, "UserSig is not base64"
	}
	zr, err := zlib.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return 70003, "UserSig is not zlib"
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return 70003, "UserSig is not zlib"
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return 70003, "UserSig is not JSON"
	}
	str := func(k string) string { v, _ := doc[k].(string); return v }
	num := func(k string) (int64, bool) {
		n, ok := doc[k].(json.Number)
		if !ok {
			return 0, false
		}
		v, err := n.Int64()
		return v, err == nil
	}
	appID, ok1 := num("TLS.sdkappid")
	t, ok2 := num("TLS.time")
	exp, ok3 := num("TLS.expire")
	if str("TLS.ver") != "2.0" || !ok1 || !ok2 || !ok3 {
		return 70003, "UserSig fields missing"
	}
	if str("TLS.identifier") != identifier {
		return 70013, "identifier does not match the UserSig"
	}
	if strconv.FormatInt(appID, 10) != sdkAppID {
		return 70014, "sdkappid does not match the UserSig"
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "TLS.identifier:%s\nTLS.sdkappid:%d\nTLS.time:%d\nTLS.expire:%d\n", identifier, appID, t, exp)
	got, err := base64.StdEncoding.DecodeString(str("TLS.sig"))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return 70009, "UserSig verification failed"
	}
	if now := time.Now().Unix(); now > t+exp || t > now+300 {
		return 70001, "UserSig expired"
	}
	return 0, ""
}
