package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCurlCommandSendsSignedCallback pastes the printed command into a real
// shell and checks what reaches the receiver: a POST whose Sign is the
// SHA-256 of the token followed by a current RequestTime.
func TestCurlCommandSendsSignedCallback(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "sha256sum", "date"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	const token = `it's a "token" $HOME`
	type received struct {
		method, path string
		query        map[string]string
		body         []byte
	}
	got := make(chan received, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := map[string]string{}
		for k := range r.URL.Query() {
			q[k] = r.URL.Query().Get(k)
		}
		got <- received{r.Method, r.URL.Path, q, body}
		_, _ = io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)
	}))
	defer srv.Close()

	cmd := curlCommand(srv.URL, "default", "local-app", "1400000001", token, true)
	before := time.Now().Unix()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("running\n%s\n: %v: %s", cmd, err, out)
	}
	r := <-got
	if r.method != http.MethodPost || r.path != "/callbacks/default/local-app" {
		t.Errorf("got %s %s, want POST /callbacks/default/local-app", r.method, r.path)
	}
	for k, want := range map[string]string{"SdkAppid": "1400000001", "CallbackCommand": "Sns.CallbackFriendDelete", "contenttype": "json"} {
		if r.query[k] != want {
			t.Errorf("query %s = %q, want %q", k, r.query[k], want)
		}
	}
	requestTime, err := strconv.ParseInt(r.query["RequestTime"], 10, 64)
	if err != nil || requestTime < before || requestTime > time.Now().Unix() {
		t.Errorf("RequestTime %q is not the time the command ran (%d)", r.query["RequestTime"], before)
	}
	sum := sha256.Sum256([]byte(token + r.query["RequestTime"]))
	if want := hex.EncodeToString(sum[:]); r.query["Sign"] != want {
		t.Errorf("Sign = %q, want %q", r.query["Sign"], want)
	}
	var body struct {
		CallbackCommand string
		PairList        []struct{ From_Account, To_Account string }
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if body.CallbackCommand != "Sns.CallbackFriendDelete" || len(body.PairList) != 1 || body.PairList[0].From_Account == "" || body.PairList[0].To_Account == "" {
		t.Errorf("body %s is not a one-pair Sns.CallbackFriendDelete callback", r.body)
	}
	if !strings.Contains(string(out), `"ActionStatus":"OK"`) {
		t.Errorf("the command did not print the answer: %s", out)
	}
}

func TestLoopback(t *testing.T) {
	for in, want := range map[string]string{
		":8080":          "127.0.0.1:8080",
		"0.0.0.0:8080":   "127.0.0.1:8080",
		"127.0.0.1:8080": "127.0.0.1:8080",
		"[::]:9090":      "127.0.0.1:9090",
	} {
		if got := loopback(in); got != want {
			t.Errorf("loopback(%q) = %q, want %q", in, got, want)
		}
	}
}
