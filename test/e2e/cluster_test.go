//go:build e2e

package e2e

import (
	"fmt"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/imcallback/friend-deletion-operator/hack/localcluster/cluster"
)

// TestLocalClusterRunsJobs checks the platform under the other tests,
// without the operator: a plain batch/v1 Job runs to Complete on the kwok
// node through the Job controller and the scheduler, and one whose pod
// carries cluster.FailAnnotation ends Failed.
func TestLocalClusterRunsJobs(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	job := func(name, annotations string) string {
		return fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: %s
  namespace: %s
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: %s
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1.37
        command: ["true"]
`, name, ns, annotations)
	}
	apply(t, job("completes", "{}")+"---\n"+job("fails", fmt.Sprintf("{%q: \"true\"}", cluster.FailAnnotation)))

	g := expectWithin(t)
	g.Eventually(func(g Gomega) {
		expectJobFinished(g, ns, "completes", "Complete", "Succeeded")
		expectJobFinished(g, ns, "fails", "Failed", "Failed")
	}).Should(Succeed())
	g.Expect(kc(g, "get", "node", local.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)).To(Equal("True"))
}
