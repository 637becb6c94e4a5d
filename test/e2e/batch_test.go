//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	. "github.com/onsi/gomega"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers"
)

// TestBatchedJobStepBurst sends a burst of callbacks to a config whose job
// step is batched: every deletion succeeds, with fewer Jobs than
// deletions, and each deletion's pairs are in exactly one Job's pairs
// file, with its name.
func TestBatchedJobStepBurst(t *testing.T) {
	t.Parallel()
	const n = 20
	a := app{namespace: newNamespace(t), name: "burst", sdkAppID: "1400000020", token: "e2e-token-burst",
		batch: "{maxDeletions: 8, maxWait: 3s}"}
	a.create(t)

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			expectOK(t, send(t, a.signed([2]string{fmt.Sprintf("burst_user_%02d", i), fmt.Sprintf("burst_friend_%02d", i)})))
		}()
	}
	wg.Wait()

	g := expectWithin(t)
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(n))
		for _, row := range rows {
			g.Expect(row).To(HaveKeyWithValue("PHASE", "Succeeded"))
		}
	}).Should(Succeed())

	// Each deletion's pairs, by name.
	var fds struct {
		Items []snsv1alpha1.FriendDeletion `json:"items"`
	}
	g.Expect(json.Unmarshal([]byte(kc(g, "get", "frienddeletions", "-n", a.namespace, "-o", "json")), &fds)).To(Succeed())
	want := map[string][]snsv1alpha1.FriendPair{}
	for _, fd := range fds.Items {
		want[fd.Name] = fd.Spec.Pairs
		g.Expect(fd.Status.Steps[0].Message).To(Equal(fmt.Sprintf("Job %s completed.", fd.Status.Steps[0].JobName)))
		// The member label finds the deletion's Job.
		g.Expect(kc(g, "get", "jobs", "-n", a.namespace, "-l", controllers.MemberLabelPrefix+fd.Name,
			"-o", "jsonpath={.items[*].metadata.name}")).To(Equal(fd.Status.Steps[0].JobName))
	}

	// Every Job (kept by keepFinishedJobs) and its pairs file.
	var jobs struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Template struct {
					Metadata struct {
						Annotations map[string]string `json:"annotations"`
					} `json:"metadata"`
				} `json:"template"`
			} `json:"spec"`
		} `json:"items"`
	}
	g.Expect(json.Unmarshal([]byte(kc(g, "get", "jobs", "-n", a.namespace, "-o", "json")), &jobs)).To(Succeed())
	g.Expect(len(jobs.Items)).To(BeNumerically("<", n), "fewer Jobs than deletions")
	t.Logf("%d deletions ran in %d Jobs", n, len(jobs.Items))
	type batchPair struct {
		FriendDeletion string `json:"frienddeletion"`
		From           string `json:"from"`
		To             string `json:"to"`
	}
	seen := map[string][]snsv1alpha1.FriendPair{}
	jobOf := map[string]string{}
	for _, job := range jobs.Items {
		raw, ok := job.Spec.Template.Metadata.Annotations[controllers.PairsAnnotation]
		if !ok {
			raw = kc(g, "get", "configmap", job.Metadata.Name+"-pairs", "-n", a.namespace, "-o", `jsonpath={.data.pairs\.json}`)
		}
		var file struct {
			Deletions []string    `json:"deletions"`
			Pairs     []batchPair `json:"pairs"`
		}
		g.Expect(json.Unmarshal([]byte(raw), &file)).To(Succeed(), "the pairs file of Job %s: %s", job.Metadata.Name, raw)
		for _, d := range file.Deletions {
			g.Expect(jobOf).NotTo(HaveKey(d), "deletion %s in two Jobs", d)
			jobOf[d] = job.Metadata.Name
		}
		for _, p := range file.Pairs {
			g.Expect(jobOf[p.FriendDeletion]).To(Equal(job.Metadata.Name))
			seen[p.FriendDeletion] = append(seen[p.FriendDeletion], snsv1alpha1.FriendPair{From: p.From, To: p.To})
		}
	}
	g.Expect(seen).To(Equal(want), "each deletion's pairs in exactly one Job's pairs file")
}

// TestFinishedBatchJobsAreDeleted: without keepFinishedJobs, a batch Job
// and its pods are deleted once every member recorded the outcome.
func TestFinishedBatchJobsAreDeleted(t *testing.T) {
	t.Parallel()
	const n = 6
	a := app{namespace: newNamespace(t), name: "tidy", sdkAppID: "1400000021", token: "e2e-token-tidy",
		batch: "{maxDeletions: 3, maxWait: 2s}", retention: "{}"}
	a.create(t)
	for i := range n {
		expectOK(t, send(t, a.signed([2]string{fmt.Sprintf("tidy_user_%02d", i), fmt.Sprintf("tidy_friend_%02d", i)})))
	}
	g := expectWithin(t)
	g.Eventually(func(g Gomega) {
		rows := friendDeletions(g, a.namespace)
		g.Expect(rows).To(HaveLen(n))
		for _, row := range rows {
			g.Expect(row).To(HaveKeyWithValue("PHASE", "Succeeded"))
		}
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(kc(g, "get", "jobs,pods,configmaps", "-n", a.namespace, "-l", controllers.LabelBatch, "-o", "name")).To(BeEmpty())
	}).Should(Succeed())
	// Each deletion still tells which Job ran it, and how it ended.
	var fds struct {
		Items []snsv1alpha1.FriendDeletion `json:"items"`
	}
	g.Expect(json.Unmarshal([]byte(kc(g, "get", "frienddeletions", "-n", a.namespace, "-o", "json")), &fds)).To(Succeed())
	jobs := map[string]int{}
	for _, fd := range fds.Items {
		st := fd.Status.Steps[0]
		g.Expect(st.Message).To(Equal(fmt.Sprintf("Job %s completed.", st.JobName)))
		jobs[st.JobName]++
	}
	g.Expect(len(jobs)).To(BeNumerically("<", n), "fewer Jobs than deletions")
}
