//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/imcallback/friend-deletion-operator/hack/localcluster/cluster"
	"github.com/imcallback/friend-deletion-operator/internal/imrest/imresttest"
)

const (
	// waitTimeout bounds every wait for the cluster or the operator to act.
	waitTimeout = 2 * time.Minute
	// pollInterval is how often a wait looks again.
	pollInterval = 250 * time.Millisecond
)

// expectWithin returns a Gomega whose Eventually polls with the suite's
// interval and timeout.
func expectWithin(t *testing.T) Gomega {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(waitTimeout)
	g.SetDefaultEventuallyPollingInterval(pollInterval)
	return g
}

// kc runs kubectl as the admin and returns its trimmed standard output,
// failing g on error.
func kc(g Gomega, args ...string) string {
	out, err := kubectl(ctx(), nil, args...)
	g.ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return strings.TrimSpace(string(out))
}

// apply applies manifests with kubectl.
func apply(t *testing.T, manifests string) {
	t.Helper()
	if out, err := kubectl(ctx(), []byte(manifests), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifests)
	}
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// newNamespace creates a namespace named after the test and waits for its
// default ServiceAccount, without which no Pod is admitted.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := "e2e-" + strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	if out, err := kubectl(ctx(), nil, "create", "namespace", name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := local.WaitForServiceAccount(ctx(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

// e2eAppKey is the secret key of the apps whose config verifies pairs.
const e2eAppKey = "e2e-app-secret-key"

// app is a CallbackConfig with one Job step, and its token Secret.
type app struct {
	namespace string
	name      string
	sdkAppID  string
	token     string
	// failJob makes kwok fail the step's pod (see cluster.FailAnnotation).
	failJob bool
	// retention is the YAML of spec.retention, e.g. "{succeeded: 5s}";
	// empty keeps the defaults but for keepFinishedJobs, which is set so
	// that the tests can look at finished Jobs and their pods.
	retention string
	// verify, when set, is a fake IM REST API the config verifies pairs
	// with (spec.verify), its secret key in the Secret <name>-im-key.
	verify *imresttest.Server
	// batch is the YAML of the purge step's batch, e.g.
	// "{maxDeletions: 8}"; empty: one Job per FriendDeletion.
	batch string
}

// create applies the Secret and the CallbackConfig and waits until the
// CallbackConfig is Ready.
func (a app) create(t *testing.T) {
	t.Helper()
	annotations := "{}"
	if a.failJob {
		annotations = fmt.Sprintf("{%q: \"true\"}", cluster.FailAnnotation)
	}
	batch := ""
	if a.batch != "" {
		batch = "\n    batch: " + a.batch
	}
	retention := "  retention: {keepFinishedJobs: true}"
	if a.retention != "" {
		retention = "  retention: " + a.retention
	}
	if a.verify != nil {
		retention += fmt.Sprintf(`
  verify:
    endpoint: %[1]s
    identifier: %[2]s
    secretKeyRef: {name: %[3]s-im-key, key: secretKey}
---
apiVersion: v1
kind: Secret
metadata:
  name: %[3]s-im-key
  namespace: %[4]s
stringData:
  secretKey: %[5]q`, a.verify.URL, a.verify.Identifier, a.name, a.namespace, e2eAppKey)
	}
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %[2]s-token
  namespace: %[1]s
stringData:
  token: %[4]q
---
apiVersion: sns.imcallback.io/v1alpha1
kind: CallbackConfig
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  sdkAppID: %[3]q
  auth:
    tokenSecretRef:
      name: %[2]s-token
      key: token
  cleanup:
  - name: purge
    job:
      spec:
        backoffLimit: 0
        template:
          metadata:
            annotations: %[5]s
          spec:
            restartPolicy: Never
            containers:
            - name: purge
              image: busybox:1.37
              command: ["sh", "-c", "cat \"$PAIRS_FILE\""]%[7]s
%[6]s
`, a.namespace, a.name, a.sdkAppID, a.token, annotations, retention, batch))

	g := expectWithin(t)
	g.Eventually(func(g Gomega) {
		g.Expect(kc(g, "get", "callbackconfig", a.name, "-n", a.namespace,
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)).To(Equal("True"))
	}).Should(Succeed(), "CallbackConfig %s/%s never became Ready", a.namespace, a.name)
	// The receiver holds no right on Secrets of its own: the controllers
	// grant it the token Secret. A callback before the grant is answered
	// 503 (as the IM backend would retry it); the tests send theirs after.
	g.Eventually(func(g Gomega) {
		g.Expect(receiverMayGet(g, a.namespace, a.name+"-token")).To(BeTrue())
	}).Should(Succeed(), "the receiver was never granted the token Secret of %s/%s", a.namespace, a.name)
}

// receiverSA is the receiver's ServiceAccount as config/default installs it.
const receiverSA = "system:serviceaccount:friend-deletion-operator-system:friend-deletion-operator-receiver"

// receiverMayGet asks the API server (kubectl auth can-i) whether the
// receiver's ServiceAccount may get the Secret.
func receiverMayGet(g Gomega, namespace, secret string) bool {
	out, err := kubectl(ctx(), nil, "auth", "can-i", "get", "secret/"+secret, "-n", namespace, "--as="+receiverSA)
	answer := strings.TrimSpace(string(out))
	g.Expect(answer).To(BeElementOf("yes", "no"), "kubectl auth can-i: %v", err)
	return answer == "yes"
}

// callback is one HTTP request to the receiver.
type callback struct {
	namespace, config string
	sdkAppID          string
	// token signs the request (RequestTime and Sign) when not empty.
	token string
	// requestTime is the RequestTime; 0 means now.
	requestTime int64
	// sign replaces the computed Sign when not empty.
	sign string
	// method defaults to POST.
	method string
	// pairs are the PairList's From_Account/To_Account pairs.
	pairs [][2]string
	// body replaces the JSON body built from pairs when not nil.
	body []byte
}

// signed returns a callback for the app, signed with its token at the
// current second, carrying the pairs.
func (a app) signed(pairs ...[2]string) callback {
	return callback{namespace: a.namespace, config: a.name, sdkAppID: a.sdkAppID, token: a.token,
		requestTime: time.Now().Unix(), pairs: pairs}
}

// answer is the receiver's reply.
type answer struct {
	Status       int    `json:"-"`
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
}

// send sends the callback and decodes the answer.
func send(t *testing.T, cb callback) answer {
	t.Helper()
	managerAlive(NewWithT(t))
	q := url.Values{}
	q.Set("SdkAppid", cb.sdkAppID)
	q.Set("CallbackCommand", "Sns.CallbackFriendDelete")
	q.Set("contenttype", "json")
	q.Set("ClientIP", "127.0.0.1")
	q.Set("OptPlatform", "RESTAPI")
	if cb.token != "" {
		rt := cb.requestTime
		if rt == 0 {
			rt = time.Now().Unix()
		}
		requestTime := strconv.FormatInt(rt, 10)
		sum := sha256.Sum256([]byte(cb.token + requestTime))
		sign := hex.EncodeToString(sum[:])
		if cb.sign != "" {
			sign = cb.sign
		}
		q.Set("RequestTime", requestTime)
		q.Set("Sign", sign)
	}
	body := cb.body
	if body == nil {
		type pair struct {
			From string `json:"From_Account"`
			To   string `json:"To_Account"`
		}
		list := make([]pair, 0, len(cb.pairs))
		for _, p := range cb.pairs {
			list = append(list, pair{p[0], p[1]})
		}
		var err error
		body, err = json.Marshal(map[string]any{"CallbackCommand": "Sns.CallbackFriendDelete", "PairList": list})
		if err != nil {
			t.Fatal(err)
		}
	}
	method := cb.method
	if method == "" {
		method = http.MethodPost
	}
	u := fmt.Sprintf("%s/callbacks/%s/%s?%s", receiverURL, cb.namespace, cb.config, q.Encode())
	req, err := http.NewRequestWithContext(ctx(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s %s answered %s with a body that is not JSON: %q", method, u, resp.Status, raw)
	}
	a.Status = resp.StatusCode
	return a
}

// expectOK fails the test unless the receiver accepted the callback.
func expectOK(t *testing.T, a answer) {
	t.Helper()
	if a.Status != http.StatusOK || a.ActionStatus != "OK" || a.ErrorCode != 0 {
		t.Fatalf("callback answered %d %+v, want 200 OK with ErrorCode 0", a.Status, a)
	}
}

// pairsOf returns n distinct pairs.
func pairsOf(n int) [][2]string {
	pairs := make([][2]string, n)
	for i := range pairs {
		pairs[i] = [2]string{fmt.Sprintf("user_%04d", i/2), fmt.Sprintf("friend_%04d", i)}
	}
	return pairs
}

// table runs `kubectl get` and splits the printed table by its header's
// columns, so empty cells stay empty.
func table(g Gomega, args ...string) (headers []string, rows []map[string]string) {
	out := kc(g, append([]string{"get"}, args...)...)
	if out == "" || strings.HasPrefix(out, "No resources found") {
		return nil, nil
	}
	lines := strings.Split(out, "\n")
	header := lines[0]
	var starts []int
	for i := 0; i < len(header); i++ {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
			end := strings.IndexByte(header[i:], ' ')
			if end < 0 {
				end = len(header) - i
			}
			headers = append(headers, header[i:i+end])
		}
	}
	for _, line := range lines[1:] {
		row := map[string]string{}
		for c, start := range starts {
			if start >= len(line) {
				row[headers[c]] = ""
				continue
			}
			end := len(line)
			if c+1 < len(starts) && starts[c+1] < len(line) {
				end = starts[c+1]
			}
			row[headers[c]] = strings.TrimSpace(line[start:end])
		}
		rows = append(rows, row)
	}
	return headers, rows
}

// friendDeletions returns `kubectl get frienddeletions` in the namespace.
func friendDeletions(g Gomega, namespace string) []map[string]string {
	managerAlive(g)
	headers, rows := table(g, "frienddeletions", "-n", namespace)
	if rows != nil {
		g.Expect(headers).To(Equal([]string{"NAME", "CONFIG", "FROM", "TO", "PAIRS", "VERIFIED", "PHASE", "AGE"}))
	}
	return rows
}
