//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// jobOf returns the Job the FriendDeletion's single step created, checking
// that status.steps[0].jobName and the Job's label agree.
func jobOf(g Gomega, namespace, name string) string {
	job := kc(g, "get", "frienddeletion", name, "-n", namespace, "-o", "jsonpath={.status.steps[0].jobName}")
	g.Expect(job).NotTo(BeEmpty(), "FriendDeletion %s/%s has no status.steps[0].jobName", namespace, name)
	g.Expect(kc(g, "get", "jobs", "-n", namespace, "-l", snsv1alpha1.LabelFriendDeletion+"="+name,
		"-o", "jsonpath={.items[*].metadata.name}")).To(Equal(job))
	return job
}

// expectJobFinished checks that the Job has the condition (Complete or
// Failed) and that its one Pod ran on the kwok node and ended in phase.
func expectJobFinished(g Gomega, namespace, job, condition, phase string) {
	g.Expect(strings.Fields(kc(g, "get", "job", job, "-n", namespace,
		"-o", `jsonpath={.status.conditions[?(@.status=="True")].type}`))).To(ContainElement(condition))
	g.Expect(kc(g, "get", "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name="+job,
		"-o", `jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{"\n"}{end}`)).
		To(Equal(local.NodeName+" "+phase), "the Job's pod did not run on the kwok node to %s", phase)
}

func TestSignedCallbackRunsItsJobToSucceeded(t *testing.T) {
	t.Parallel()
	a := app{namespace: newNamespace(t), name: "chat", sdkAppID: "1400000001", token: "e2e-token-one"}
	a.create(t)

	expectOK(t, send(t, a.signed([2]string{"alice", "bob"})))

	g := expectWithin(t)
	var name string
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(1))
		g.Expect(rows[0]).To(And(
			HaveKeyWithValue("CONFIG", "chat"),
			HaveKeyWithValue("FROM", "alice"),
			HaveKeyWithValue("TO", "bob"),
			HaveKeyWithValue("PAIRS", "1"),
			HaveKeyWithValue("PHASE", "Succeeded"),
		))
		name = rows[0]["NAME"]
	}).Should(Succeed())

	job := jobOf(g, a.namespace, name)
	expectJobFinished(g, a.namespace, job, "Complete", "Succeeded")
	g.Expect(kc(g, "get", "frienddeletion", name, "-n", a.namespace,
		"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)).To(Equal("True"))

	// One pair is inlined: the Job controller's pod carries the pairs file
	// in an annotation the downward API mounts, and there is no ConfigMap.
	pod := "batch.kubernetes.io/job-name=" + job
	g.Expect(kc(g, "get", "pods", "-n", a.namespace, "-l", pod,
		"-o", `jsonpath={.items[0].metadata.annotations.sns\.imcallback\.io/pairs}`)).To(MatchJSON(`[{"from":"alice","to":"bob"}]`))
	g.Expect(kc(g, "get", "pods", "-n", a.namespace, "-l", pod,
		"-o", `jsonpath={.items[0].spec.volumes[?(@.name=="friend-deletion-pairs")].downwardAPI.items[0].path}`)).To(Equal("pairs.json"))
	g.Expect(kc(g, "get", "configmaps", "-n", a.namespace, "-l", snsv1alpha1.LabelFriendDeletion, "-o", "name")).To(BeEmpty())
}

func TestRedeliveredCallbackIsStoredOnce(t *testing.T) {
	t.Parallel()
	a := app{namespace: newNamespace(t), name: "chat", sdkAppID: "1400000001", token: "e2e-token-two"}
	a.create(t)
	g := expectWithin(t)

	cb := a.signed([2]string{"carol", "dave"})
	expectOK(t, send(t, cb))
	expectOK(t, send(t, cb)) // the IM backend's retry: the very same request
	// OK is answered only once the object is stored, so this is final.
	g.Expect(strings.Fields(kc(g, "get", "frienddeletions", "-n", a.namespace, "-o", "name"))).To(HaveLen(1))

	// The same pair deleted again later is another deletion.
	later := cb
	later.requestTime++
	expectOK(t, send(t, later))
	g.Expect(strings.Fields(kc(g, "get", "frienddeletions", "-n", a.namespace, "-o", "name"))).To(HaveLen(2))

	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(2))
		for _, row := range rows {
			g.Expect(row).To(And(HaveKeyWithValue("FROM", "carol"), HaveKeyWithValue("TO", "dave"), HaveKeyWithValue("PHASE", "Succeeded")))
		}
	}).Should(Succeed())
	// One Job each, no duplicate.
	g.Expect(strings.Fields(kc(g, "get", "jobs", "-n", a.namespace, "-o", "name"))).To(HaveLen(2))
}

func TestCallbackWith2000Pairs(t *testing.T) {
	t.Parallel()
	a := app{namespace: newNamespace(t), name: "bulk", sdkAppID: "1400000003", token: "e2e-token-bulk"}
	a.create(t)

	pairs := pairsOf(snsv1alpha1.MaxPairs)
	expectOK(t, send(t, a.signed(pairs...)))

	g := expectWithin(t)
	var name string
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(1))
		g.Expect(rows[0]).To(And(
			HaveKeyWithValue("FROM", pairs[0][0]),
			HaveKeyWithValue("TO", pairs[0][1]),
			HaveKeyWithValue("PAIRS", strconv.Itoa(snsv1alpha1.MaxPairs)),
			HaveKeyWithValue("PHASE", "Succeeded"),
		))
		name = rows[0]["NAME"]
	}).Should(Succeed())

	g.Expect(strings.Fields(kc(g, "get", "frienddeletion", name, "-n", a.namespace, "-o", "jsonpath={.spec.pairs[*].to}"))).
		To(HaveLen(snsv1alpha1.MaxPairs))
	expectJobFinished(g, a.namespace, jobOf(g, a.namespace, name), "Complete", "Succeeded")

	// 2000 pairs are too many to inline: the Job's pairs file comes from a
	// ConfigMap holding every pair.
	var cms struct {
		Items []struct {
			Data map[string]string `json:"data"`
		} `json:"items"`
	}
	g.Expect(json.Unmarshal([]byte(kc(g, "get", "configmaps", "-n", a.namespace,
		"-l", snsv1alpha1.LabelFriendDeletion+"="+name, "-o", "json")), &cms)).To(Succeed())
	g.Expect(cms.Items).To(HaveLen(1), "want one pairs ConfigMap for %s", name)
	longest := 0
	for _, v := range cms.Items[0].Data {
		var list []json.RawMessage
		if json.Unmarshal([]byte(v), &list) == nil && len(list) > longest {
			longest = len(list)
		}
	}
	g.Expect(longest).To(Equal(snsv1alpha1.MaxPairs), "the pairs ConfigMap does not hold a JSON list of every pair")
}

func TestBadCallbacksAreRefused(t *testing.T) {
	t.Parallel()
	a := app{namespace: newNamespace(t), name: "strict", sdkAppID: "1400000004", token: "e2e-secret-token"}
	a.create(t)

	pair := [2]string{"eve", "mallory"}
	now := time.Now().Unix()
	wrongSum := sha256.Sum256([]byte("wrong" + strconv.FormatInt(now, 10)))
	with := func(change func(*callback)) callback {
		cb := a.signed(pair)
		change(&cb)
		return cb
	}
	cases := []struct {
		name   string
		cb     callback
		status int
	}{
		{"a wrong Sign", with(func(cb *callback) { cb.sign = hex.EncodeToString(wrongSum[:]) }), http.StatusUnauthorized},
		{"signed with another token", with(func(cb *callback) { cb.token = "not-the-token" }), http.StatusUnauthorized},
		{"RequestTime ten minutes old", with(func(cb *callback) { cb.requestTime = now - 600 }), http.StatusUnauthorized},
		{"no RequestTime and Sign", with(func(cb *callback) { cb.token = "" }), http.StatusUnauthorized},
		{"another SdkAppid", with(func(cb *callback) { cb.sdkAppID = "1400000099" }), http.StatusForbidden},
		{"GET", with(func(cb *callback) { cb.method = http.MethodGet }), http.StatusMethodNotAllowed},
		{"a body that is not JSON", with(func(cb *callback) { cb.body = []byte(`{"PairList": [`) }), http.StatusBadRequest},
		{"an empty PairList", with(func(cb *callback) { cb.pairs = nil }), http.StatusBadRequest},
		{"an unknown CallbackConfig", with(func(cb *callback) { cb.config = "no-such-config" }), http.StatusNotFound},
	}
	for _, c := range cases {
		got := send(t, c.cb)
		if got.Status != c.status || got.ActionStatus != "FAIL" || got.ErrorCode != 1 || got.ErrorInfo == "" {
			t.Errorf("%s: answered %d %+v, want %d with ActionStatus FAIL, ErrorCode 1 and an ErrorInfo", c.name, got.Status, got, c.status)
		}
		if strings.Contains(got.ErrorInfo, a.token) {
			t.Errorf("%s: ErrorInfo %q gives the token away", c.name, got.ErrorInfo)
		}
	}

	g := expectWithin(t)
	g.Expect(friendDeletions(g, a.namespace)).To(BeEmpty(), "a refused callback was stored")
	// The config counts what it refused (all but the unknown config's), in
	// batches every few seconds.
	g.Eventually(func(g Gomega) {
		g.Expect(kc(g, "get", "callbackconfig", a.name, "-n", a.namespace,
			"-o", "jsonpath={.status.rejectedCallbacks}/{.status.acceptedCallbacks}")).To(Equal(strconv.Itoa(len(cases)-1) + "/"))
	}).Should(Succeed())
}

func TestFailingJobMakesFriendDeletionFailed(t *testing.T) {
	t.Parallel()
	a := app{namespace: newNamespace(t), name: "doomed", sdkAppID: "1400000005", token: "e2e-token-fail", failJob: true}
	a.create(t)

	expectOK(t, send(t, a.signed([2]string{"frank", "grace"})))

	g := expectWithin(t)
	var name string
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(1))
		g.Expect(rows[0]).To(HaveKeyWithValue("PHASE", "Failed"))
		name = rows[0]["NAME"]
	}).Should(Succeed())
	expectJobFinished(g, a.namespace, jobOf(g, a.namespace, name), "Failed", "Failed")
	g.Expect(kc(g, "get", "frienddeletion", name, "-n", a.namespace,
		"-o", `jsonpath={.status.steps[0].phase}/{.status.conditions[?(@.type=="Ready")].status}`)).To(Equal("Failed/False"))
}

func TestRetentionDeletesFinishedFriendDeletions(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	const retention = "{succeeded: 5s, failed: 5s}"
	apps := map[string]app{
		"Succeeded": {namespace: ns, name: "brief", sdkAppID: "1400000006", token: "e2e-token-brief", retention: retention},
		"Failed":    {namespace: ns, name: "brief-failing", sdkAppID: "1400000007", token: "e2e-token-brief-2", retention: retention, failJob: true},
	}
	g := expectWithin(t)
	for phase, a := range apps {
		a.create(t)
		expectOK(t, send(t, a.signed([2]string{"heidi", "ivan"})))
		// Retention starts once the FriendDeletion is finished; it is
		// kept for 5s, plenty of polls to see it finish.
		g.Eventually(func(g Gomega) {
			g.Expect(kc(g, "get", "frienddeletions", "-n", ns, "-l", snsv1alpha1.LabelConfig+"="+a.name,
				"-o", "jsonpath={.items[*].status.phase}")).To(Equal(phase))
		}).Should(Succeed(), "the FriendDeletion of %s never reached %s", a.name, phase)
	}

	// Then it goes, and what it created goes with it.
	g.Eventually(func(g Gomega) {
		g.Expect(friendDeletions(g, ns)).To(BeEmpty())
		g.Expect(kc(g, "get", "jobs,pods,configmaps", "-n", ns, "-l", snsv1alpha1.LabelFriendDeletion, "-o", "name")).To(BeEmpty())
		g.Expect(kc(g, "get", "pods", "-n", ns, "-o", "name")).To(BeEmpty())
	}).Should(Succeed())
}
