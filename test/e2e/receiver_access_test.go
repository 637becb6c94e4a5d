//go:build e2e

package e2e

import (
	"testing"

	. "github.com/onsi/gomega"
)

// The receiver may read a config's token Secret because the controllers
// grant it (a Role and RoleBinding owned by the config), and no other
// Secret; deleting the config takes the grant with it: the garbage
// collector of the cluster's kube-controller-manager deletes both.
func TestReceiverGrantGoesWithTheConfig(t *testing.T) {
	t.Parallel()
	a := app{namespace: newNamespace(t), name: "granted", sdkAppID: "1400000001", token: "e2e-token-grant"}
	a.create(t) // waits for the grant

	g := expectWithin(t)
	g.Expect(receiverMayGet(g, a.namespace, "another-secret")).To(BeFalse())
	grant := a.name + "-receiver-token"
	for _, kind := range []string{"role", "rolebinding"} {
		g.Expect(kc(g, "get", kind, grant, "-n", a.namespace,
			"-o", `jsonpath={.metadata.ownerReferences[?(@.controller==true)].kind}/{.metadata.ownerReferences[?(@.controller==true)].name}`)).
			To(Equal("CallbackConfig/" + a.name))
	}

	kc(g, "delete", "callbackconfig", a.name, "-n", a.namespace)
	g.Eventually(func(g Gomega) {
		g.Expect(kc(g, "get", "roles,rolebindings", "-n", a.namespace, "-l", "sns.imcallback.io/receiver-access",
			"-o", "name")).To(BeEmpty())
		g.Expect(receiverMayGet(g, a.namespace, a.name+"-token")).To(BeFalse())
	}).Should(Succeed(), "the garbage collector did not delete the grant with its config")
}
