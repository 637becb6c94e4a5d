//go:build e2e

package e2e

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/internal/imrest/imresttest"
)

// fakeIMFor starts a fake IM REST API for the app's SDKAppID, which the
// operator's process (on this machine) reaches over HTTP, and checks at
// the end that every request it got was well-formed.
func fakeIMFor(t *testing.T, sdkAppID string) *imresttest.Server {
	t.Helper()
	srv := imresttest.NewServer(sdkAppID, "administrator", []byte(e2eAppKey))
	t.Cleanup(func() {
		srv.Close()
		if p := srv.Problems(); len(p) > 0 {
			t.Errorf("malformed IM REST requests: %q", p)
		}
	})
	return srv
}

func TestVerifiedCallbackCleansUpOnlyTheGonePair(t *testing.T) {
	t.Parallel()
	im := fakeIMFor(t, "1400000014")
	im.MakeFriends("alice", "bob") // added back before the cleanup ran
	a := app{namespace: newNamespace(t), name: "chat", sdkAppID: "1400000014", token: "e2e-token-verify", verify: im}
	a.create(t)

	expectOK(t, send(t, a.signed([2]string{"alice", "bob"}, [2]string{"alice", "carol"})))

	g := expectWithin(t)
	var name string
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(1))
		g.Expect(rows[0]).To(And(
			HaveKeyWithValue("PAIRS", "2"),
			HaveKeyWithValue("VERIFIED", "1/2"),
			HaveKeyWithValue("PHASE", "Succeeded"),
		))
		name = rows[0]["NAME"]
	}).Should(Succeed())

	job := jobOf(g, a.namespace, name)
	expectJobFinished(g, a.namespace, job, "Complete", "Succeeded")
	g.Expect(kc(g, "get", "pods", "-n", a.namespace, "-l", "batch.kubernetes.io/job-name="+job,
		"-o", `jsonpath={.items[0].metadata.annotations.sns\.imcallback\.io/pairs}`)).To(MatchJSON(`[{"from":"alice","to":"carol"}]`))
	g.Expect(kc(g, "get", "frienddeletion", name, "-n", a.namespace,
		"-o", `jsonpath={.status.conditions[?(@.type=="Verified")].reason}`)).To(Equal(snsv1alpha1.ReasonPairsSkipped))
	g.Expect(kc(g, "events", "-n", a.namespace, "--for", "frienddeletion/"+name)).To(ContainSubstring(snsv1alpha1.ReasonPairsSkipped))
	g.Expect(im.Calls()).To(HaveLen(1))
}

func TestVerifiedCallbackOfFriendsAgainRunsNothing(t *testing.T) {
	t.Parallel()
	im := fakeIMFor(t, "1400000015")
	im.MakeFriends("dave", "erin")
	a := app{namespace: newNamespace(t), name: "chat", sdkAppID: "1400000015", token: "e2e-token-verify-2", verify: im}
	a.create(t)

	expectOK(t, send(t, a.signed([2]string{"dave", "erin"}, [2]string{"erin", "dave"})))

	g := expectWithin(t)
	var name string
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(1))
		g.Expect(rows[0]).To(And(HaveKeyWithValue("VERIFIED", "0/2"), HaveKeyWithValue("PHASE", "Succeeded")))
		name = rows[0]["NAME"]
	}).Should(Succeed())
	g.Expect(kc(g, "get", "frienddeletion", name, "-n", a.namespace,
		"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].reason}`)).To(Equal(snsv1alpha1.ReasonNothingToClean))
	g.Expect(strings.TrimSpace(kc(g, "get", "jobs", "-n", a.namespace, "-o", "name"))).To(BeEmpty())
}
