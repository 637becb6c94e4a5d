package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// batchJobStep is jobStep with a batch.
func batchJobStep(name string, maxDeletions int32, maxPairs int32, maxWait time.Duration) snsv1alpha1.CleanupStep {
	s := jobStep(name)
	s.Batch = &snsv1alpha1.JobBatch{MaxDeletions: maxDeletions, MaxWait: &metav1.Duration{Duration: maxWait}}
	if maxPairs > 0 {
		s.Batch.MaxPairs = ptr.To(maxPairs)
	}
	return s
}

// batchJobs lists the namespace's batch Jobs, by name.
func batchJobs(g Gomega, ns string) map[string]batchv1.Job {
	var jobs batchv1.JobList
	g.Expect(env.Client.List(context.Background(), &jobs, client.InNamespace(ns), client.HasLabels{LabelBatch})).To(Succeed())
	out := map[string]batchv1.Job{}
	for _, j := range jobs.Items {
		out[j.Name] = j
	}
	return out
}

// onlyBatchJob waits until the namespace has exactly one batch Job, and
// returns it.
func onlyBatchJob(t *testing.T, ns string) batchv1.Job {
	t.Helper()
	var job batchv1.Job
	gt(t).Eventually(func(g Gomega) {
		jobs := batchJobs(g, ns)
		g.Expect(jobs).To(HaveLen(1))
		for _, j := range jobs {
			job = j
		}
	}).Should(Succeed())
	return job
}

// batchFileOf reads a batch Job's pairs file, inline or from its ConfigMap.
func batchFileOf(g Gomega, job *batchv1.Job) batchFile {
	raw, ok := job.Spec.Template.Annotations[PairsAnnotation]
	if !ok {
		cm := &corev1.ConfigMap{}
		g.Expect(env.Client.Get(context.Background(), nsName(job.Namespace, batchConfigMapName(job.Name)), cm)).To(Succeed())
		raw = cm.Data[PairsKey]
	}
	var f batchFile
	g.Expect(json.Unmarshal([]byte(raw), &f)).To(Succeed())
	return f
}

// ownerNames are the names of a Job's FriendDeletion owners, sorted.
func ownerNames(job *batchv1.Job) []string {
	var out []string
	for _, ref := range job.OwnerReferences {
		if ref.Kind == "FriendDeletion" {
			out = append(out, ref.Name)
		}
	}
	slices.Sort(out)
	return out
}

func pairs(n int, from string) []snsv1alpha1.FriendPair {
	var out []snsv1alpha1.FriendPair
	for i := range n {
		out = append(out, snsv1alpha1.FriendPair{From: from, To: fmt.Sprintf("friend%d", i)})
	}
	return out
}

// TestBatchFormsByMaxDeletions: three deletions fill a batch of three at
// once, one Job serves them all, and its outcome reaches every member; a
// fourth waits for the next batch.
func TestBatchFormsByMaxDeletions(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute), externalStep("crm", 0)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app", pairs(2, n)...))
	}
	g := gt(t)
	job := onlyBatchJob(t, ns)
	g.Expect(job.Name).To(Equal("fd1-purge"), "named after its first member")
	g.Expect(ownerNames(&job)).To(Equal([]string{"fd1", "fd2", "fd3"}))
	for _, ref := range job.OwnerReferences {
		g.Expect(ptr.Deref(ref.Controller, false)).To(BeFalse(), "no member controls the Job")
	}
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		g.Expect(job.Labels).To(HaveKeyWithValue(memberLabelKey(n), ""))
		var found batchv1.JobList
		g.Expect(env.Client.List(t.Context(), &found, client.InNamespace(ns), client.HasLabels{MemberLabelPrefix + n})).To(Succeed())
		g.Expect(found.Items).To(HaveLen(1), "the member label finds the Job of %s", n)
	}
	g.Expect(job.Labels).To(HaveKeyWithValue(LabelBatch, "3"))
	f := batchFileOf(g, &job)
	g.Expect(f.Deletions).To(Equal([]string{"fd1", "fd2", "fd3"}))
	g.Expect(f.Pairs).To(HaveLen(6))
	g.Expect(f.Pairs[0]).To(Equal(batchPair{FriendDeletion: "fd1", From: "fd1", To: "friend0"}))
	c := job.Spec.Template.Spec.Containers[0]
	g.Expect(envValue(c.Env, EnvFriendDeletionCount)).To(Equal("3"))
	g.Expect(envValue(c.Env, EnvPairCount)).To(Equal("6"))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		fd := waitForPhase(t, ns, n, snsv1alpha1.PhaseRunning)
		st := stepOf(g, fd, "purge")
		g.Expect(st.JobName).To(Equal("fd1-purge"))
		g.Expect(st.Message).To(Equal("Running Job fd1-purge."))
	}

	// A fourth waits for another batch: no Job, no write.
	create(t, newFriendDeletion(ns, "fd4", "app"))
	g.Consistently(func(g Gomega) {
		g.Expect(batchJobs(g, ns)).To(HaveLen(1))
		g.Expect(getFD(g, ns, "fd4").Status.Steps).To(BeEmpty())
	}).Should(Succeed())

	// The outcome reaches every member, which goes on to its next step;
	// the Job is deleted once every member recorded it.
	setJobStatus(t, &job, "complete")
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		g.Eventually(func(g Gomega) {
			fd := getFD(g, ns, n)
			g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
			g.Expect(stepOf(g, fd, "purge").Message).To(Equal("Job fd1-purge completed."))
			g.Expect(stepOf(g, fd, "crm").Phase).To(Equal(snsv1alpha1.PhaseRunning))
		}).Should(Succeed())
	}
	g.Eventually(func(g Gomega) map[string]batchv1.Job { return batchJobs(g, ns) }).Should(BeEmpty())
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		g.Expect(eventsFor(g, ns, n)).To(BeEmpty(), "a batch without a hitch is no news")
	}
}

// TestBatchFormsByMaxWait: two deletions, fewer than maxDeletions, wait
// until the first has waited maxWait (on the test's clock), then share one
// Job.
func TestBatchFormsByMaxWait(t *testing.T) {
	ns := env.Namespace(t)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	opts := testOptions()
	opts.Clock = clk
	startManager(t, ns, opts)
	create(t, newConfig(ns, "app", batchJobStep("purge", 100, 0, time.Minute)),
		newFriendDeletion(ns, "fd1", "app"), newFriendDeletion(ns, "fd2", "app"))
	g := gt(t)
	g.Consistently(func(g Gomega) {
		g.Expect(batchJobs(g, ns)).To(BeEmpty())
		g.Expect(getFD(g, ns, "fd1").Status.Steps).To(BeEmpty(), "waiting writes nothing")
	}).Should(Succeed())

	clk.Step(30 * time.Second)
	poke(t, ns, "fd2")
	g.Consistently(func(g Gomega) { g.Expect(batchJobs(g, ns)).To(BeEmpty()) }).Should(Succeed())

	clk.Step(40 * time.Second)
	poke(t, ns, "fd2")
	g.Eventually(func(g Gomega) {
		jobs := batchJobs(g, ns)
		g.Expect(jobs).To(HaveLen(1))
		job := jobs["fd1-purge"]
		g.Expect(ownerNames(&job)).To(Equal([]string{"fd1", "fd2"}))
	}).Should(Succeed())
	for _, n := range []string{"fd1", "fd2"} {
		g.Expect(stepOf(g, waitForPhase(t, ns, n, snsv1alpha1.PhaseRunning), "purge").JobName).To(Equal("fd1-purge"))
	}
}

// TestBatchMaxPairsSplits: with maxPairs 4, two deletions of two pairs
// fill a batch; a third of three pairs does not fit and waits, until one
// with more pairs than maxPairs arrives: that one is a batch alone, and
// the third, followed by one that does not fit, forms its own.
func TestBatchMaxPairsSplits(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 10, 4, 10*time.Minute)))
	create(t, newFriendDeletion(ns, "fd1", "app", pairs(2, "a")...), newFriendDeletion(ns, "fd2", "app", pairs(2, "b")...),
		newFriendDeletion(ns, "fd3", "app", pairs(3, "c")...))
	g := gt(t)
	g.Eventually(func(g Gomega) {
		jobs := batchJobs(g, ns)
		g.Expect(jobs).To(HaveLen(1))
		job := jobs["fd1-purge"]
		g.Expect(ownerNames(&job)).To(Equal([]string{"fd1", "fd2"}))
		g.Expect(batchFileOf(g, &job).Pairs).To(HaveLen(4))
	}).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(batchJobs(g, ns)).To(HaveLen(1)) }).Should(Succeed())

	create(t, newFriendDeletion(ns, "fd4", "app", pairs(9, "d")...))
	g.Eventually(func(g Gomega) {
		jobs := batchJobs(g, ns)
		g.Expect(slices.Sorted(maps.Keys(jobs))).To(Equal([]string{"fd1-purge", "fd3-purge", "fd4-purge"}))
		j3, j4 := jobs["fd3-purge"], jobs["fd4-purge"]
		g.Expect(ownerNames(&j3)).To(Equal([]string{"fd3"}))
		g.Expect(ownerNames(&j4)).To(Equal([]string{"fd4"}))
		g.Expect(batchFileOf(g, &j4).Pairs).To(HaveLen(9))
	}).Should(Succeed())
}

// TestBatchJobFailureFailsEveryMember: a failed batch Job fails every
// member's step, with a message naming the Job.
func TestBatchJobFailureFailsEveryMember(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute), externalStep("crm", 0)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	job := getJob(t, ns, "fd1-purge")
	setJobStatus(t, job, "failed")
	g := gt(t)
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		fd := waitForPhase(t, ns, n, snsv1alpha1.PhaseFailed)
		st := stepOf(g, fd, "purge")
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseFailed))
		g.Expect(st.Message).To(HavePrefix("Job fd1-purge failed: BackoffLimitExceeded"))
		g.Expect(stepOf(g, fd, "crm").Phase).To(Equal(snsv1alpha1.PhasePending))
		g.Eventually(func(g Gomega) []string { return eventsFor(g, ns, n) }).Should(ContainElement("StepFailed"))
	}
}

// failingJobCreates is a rest config whose POSTs of Jobs fail while fail
// is set: refused (503) when created is false, or sent and then reported
// failed, as if the manager stopped before it heard the answer.
func failingJobCreates(cfg *rest.Config, fail *atomic.Bool, sendFirst bool) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodPost || resourceOf(req.URL.Path) != "jobs" || !fail.Load() {
				return rt.RoundTrip(req)
			}
			if sendFirst {
				if res, err := rt.RoundTrip(req); err == nil {
					_ = res.Body.Close()
				}
			}
			return nil, errors.New("test: connection lost")
		})
	})
	return cfg
}

// TestBatchRestartBetweenMembershipAndJob stops the manager after it wrote
// the members' status and before the Job was created (its creates fail),
// and then once after the Job was created but before the manager heard so:
// each time a new manager creates (or finds) one Job for the same members.
func TestBatchRestartBetweenMembershipAndJob(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sendFirst bool
	}{
		{"before the Job is created", false},
		{"after the Job is created, before it is recorded", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := env.Namespace(t)
			var fail atomic.Bool
			fail.Store(true)
			m1 := startManagerOn(t, failingJobCreates(env.Config, &fail, tc.sendFirst), ns, testOptions())
			cfg := newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute))
			cfg.Spec.Retention.KeepFinishedJobs = true // the Job stays to be counted
			create(t, cfg)
			for _, n := range []string{"fd1", "fd2", "fd3"} {
				create(t, newFriendDeletion(ns, n, "app"))
			}
			g := gt(t)
			// Membership is recorded, and the manager keeps failing to hear
			// of a Job.
			g.Eventually(func(g Gomega) {
				for _, n := range []string{"fd1", "fd2", "fd3"} {
					st := stepOf(g, getFD(g, ns, n), "purge")
					g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
					g.Expect(st.JobName).To(Equal("fd1-purge"))
				}
			}).Should(Succeed())
			m1.Stop()
			if !tc.sendFirst {
				g.Expect(batchJobs(g, ns)).To(BeEmpty())
			}

			fail.Store(false)
			startManager(t, ns, testOptions())
			var job batchv1.Job
			g.Eventually(func(g Gomega) {
				jobs := batchJobs(g, ns)
				g.Expect(jobs).To(HaveLen(1))
				job = jobs["fd1-purge"]
				g.Expect(ownerNames(&job)).To(Equal([]string{"fd1", "fd2", "fd3"}))
			}).Should(Succeed())
			setJobStatus(t, &job, "complete")
			for _, n := range []string{"fd1", "fd2", "fd3"} {
				waitForPhase(t, ns, n, snsv1alpha1.PhaseSucceeded)
			}
			g.Consistently(func(g Gomega) { g.Expect(batchJobs(g, ns)).To(HaveLen(1)) }).Should(Succeed())
		})
	}
}

// TestBatchMemberLeftOutJoinsAnotherBatch: a member whose status names a
// batch Job that was created without it (its membership write was not
// seen when the Job was made) goes back to Pending and gets a Job of its
// own batch, never two.
func TestBatchMemberLeftOutJoinsAnotherBatch(t *testing.T) {
	ns := env.Namespace(t)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	opts := testOptions()
	opts.Clock = clk
	cfg := newConfig(ns, "app", batchJobStep("purge", 2, 0, time.Minute))
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"), newFriendDeletion(ns, "fd2", "app"), newFriendDeletion(ns, "fd3", "app"))
	// The Job fd1-purge exists for fd1 and fd2 only, but fd3 records it
	// too, as a manager stopped mid-way might have left it.
	g := gt(t)
	fds := map[string]*snsv1alpha1.FriendDeletion{}
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		fd := getFD(g, ns, n)
		fd.Status.Phase = snsv1alpha1.PhaseRunning
		fd.Status.Steps = []snsv1alpha1.StepStatus{{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseRunning,
			JobName: "fd1-purge", Message: jobRunningMessage("fd1-purge"), StartTime: ptr.To(metav1.Now())}}
		g.Expect(env.Client.Status().Update(t.Context(), fd)).To(Succeed())
		fds[n] = fd
	}
	r := &FriendDeletionReconciler{Client: env.Client, Options: opts}
	_, err := r.createBatchJob(t.Context(), ns, "purge", cfg.Spec.Cleanup[0].Job, "fd1-purge", []*snsv1alpha1.FriendDeletion{fds["fd1"], fds["fd2"]})
	g.Expect(err).NotTo(HaveOccurred())

	startManager(t, ns, opts)
	g.Eventually(func(g Gomega) {
		st := stepOf(g, getFD(g, ns, "fd3"), "purge")
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhasePending))
		g.Expect(st.Message).To(ContainSubstring("was created without this FriendDeletion"))
	}).Should(Succeed())
	clk.Step(2 * time.Minute)
	poke(t, ns, "fd3")
	g.Eventually(func(g Gomega) {
		jobs := batchJobs(g, ns)
		g.Expect(jobs).To(HaveLen(2))
		j1, j3 := jobs["fd1-purge"], jobs["fd3-purge"]
		g.Expect(ownerNames(&j1)).To(Equal([]string{"fd1", "fd2"}))
		g.Expect(ownerNames(&j3)).To(Equal([]string{"fd3"}))
		g.Expect(stepOf(g, getFD(g, ns, "fd3"), "purge").JobName).To(Equal("fd3-purge"))
	}).Should(Succeed())
	g.Expect(strings.Join(ownerNames(ptr.To(batchJobs(g, ns)["fd1-purge"])), ",")).To(Equal("fd1,fd2"))
}

// TestBatchPairsConfigMap: a batch pairs file over InlinePairsLimit comes
// from a ConfigMap owned by the members, deleted with the finished Job.
func TestBatchPairsConfigMap(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app", pairs(40, "someone_with_a_long_account_id_"+n)...))
	}
	job := getJob(t, ns, "fd1-purge")
	g := gt(t)
	g.Expect(job.Spec.Template.Annotations).NotTo(HaveKey(PairsAnnotation))
	g.Expect(job.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("VolumeSource.ConfigMap.Name", "fd1-purge-pairs")))
	cm := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(t.Context(), nsName(ns, "fd1-purge-pairs"), cm)).To(Succeed())
	g.Expect(len(cm.Data[PairsKey])).To(BeNumerically(">", InlinePairsLimit))
	g.Expect(cm.OwnerReferences).To(HaveLen(3))
	f := batchFileOf(g, job)
	g.Expect(f.Deletions).To(Equal([]string{"fd1", "fd2", "fd3"}))
	g.Expect(f.Pairs).To(HaveLen(120))

	setJobStatus(t, job, "complete")
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		waitForPhase(t, ns, n, snsv1alpha1.PhaseSucceeded)
	}
	g.Eventually(func(g Gomega) {
		g.Expect(batchJobs(g, ns)).To(BeEmpty())
		var cms corev1.ConfigMapList
		g.Expect(env.Client.List(t.Context(), &cms, client.InNamespace(ns), client.HasLabels{LabelBatch})).To(Succeed())
		g.Expect(cms.Items).To(BeEmpty())
	}).Should(Succeed())
}

// TestBatchBurst stores a burst of deletions, reconciled by several
// workers at once: every one ends in exactly one batch Job, whose pairs
// file holds its pairs, and no Job has more than maxDeletions.
func TestBatchBurst(t *testing.T) {
	const n, maxDeletions = 120, 50
	ns := env.Namespace(t)
	opts := testOptions()
	opts.FriendDeletionConcurrency = 8
	startManager(t, ns, opts)
	create(t, newConfig(ns, "app", batchJobStep("purge", maxDeletions, 0, 2*time.Second)))
	for i := range n {
		create(t, newFriendDeletion(ns, fmt.Sprintf("fd%03d", i), "app", pairs(1+i%3, fmt.Sprintf("user%03d", i))...))
	}
	g := gt(t)
	g.Eventually(func(g Gomega) {
		var list snsv1alpha1.FriendDeletionList
		g.Expect(env.Client.List(t.Context(), &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(n))
		for _, fd := range list.Items {
			g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseRunning), fd.Name)
		}
	}).Should(Succeed())
	var jobs map[string]batchv1.Job
	g.Eventually(func(g Gomega) {
		jobs = batchJobs(g, ns)
		members := 0
		for _, j := range jobs {
			members += len(ownerNames(&j))
		}
		g.Expect(members).To(Equal(n))
	}).Should(Succeed())
	jobOf := map[string]string{}
	for name, j := range jobs {
		g.Expect(len(ownerNames(&j))).To(BeNumerically("<=", maxDeletions))
		f := batchFileOf(g, &j)
		g.Expect(f.Deletions).To(Equal(ownerNames(&j)))
		for _, d := range f.Deletions {
			g.Expect(jobOf).NotTo(HaveKey(d), "%s in two Jobs", d)
			jobOf[d] = name
		}
		counts := map[string]int{}
		for _, p := range f.Pairs {
			counts[p.FriendDeletion]++
		}
		for _, d := range f.Deletions {
			var i int
			_, _ = fmt.Sscanf(d, "fd%03d", &i)
			g.Expect(counts[d]).To(Equal(1+i%3), "the pairs of %s", d)
		}
	}
	for i := range n {
		name := fmt.Sprintf("fd%03d", i)
		g.Expect(stepOf(g, getFD(g, ns, name), "purge").JobName).To(Equal(jobOf[name]))
	}
	t.Logf("%d deletions in %d Jobs", n, len(jobs))
	g.Expect(len(jobs)).To(BeNumerically("<", n/10), "batches, not one Job each")
}

// TestBatchMemberDeletedWhileJobRuns: a member deleted while its batch Job
// runs takes nothing from the others; the Job's outcome reaches them, and
// the Job is deleted once they have recorded it.
func TestBatchMemberDeletedWhileJobRuns(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	job := getJob(t, ns, "fd1-purge")
	waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)
	g := gt(t)
	g.Expect(env.Client.Delete(t.Context(), getFD(g, ns, "fd1"))).To(Succeed())
	setJobStatus(t, job, "complete")
	for _, n := range []string{"fd2", "fd3"} {
		g.Expect(stepOf(g, waitForPhase(t, ns, n, snsv1alpha1.PhaseSucceeded), "purge").Message).To(Equal("Job fd1-purge completed."))
	}
	g.Eventually(func(g Gomega) map[string]batchv1.Job { return batchJobs(g, ns) }).Should(BeEmpty())
}

// TestBatchJobRefusedFailsEveryMember: a batch Job the API server refuses
// for good fails every member's step with its message; nothing is retried.
func TestBatchJobRefusedFailsEveryMember(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	bad := batchJobStep("purge", 3, 0, 10*time.Minute)
	bad.Job.Spec.Template.Spec.Containers[0].Name = "Clean_Up"
	create(t, newConfig(ns, "app", bad))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	g := gt(t)
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		fd := waitForPhase(t, ns, n, snsv1alpha1.PhaseFailed)
		g.Expect(stepOf(g, fd, "purge").Message).To(SatisfyAll(ContainSubstring("Refused for good"), ContainSubstring("Clean_Up")))
		g.Expect(stepOf(g, fd, "purge").JobName).To(Equal("fd1-purge"))
	}
	g.Consistently(func(g Gomega) { g.Expect(batchJobs(g, ns)).To(BeEmpty()) }).Should(Succeed())
}

// TestBatchJobDeniedByAdmissionPolicyFailsEveryMember: a batch Job refused
// by a ValidatingAdmissionPolicy fails every member's step at once with
// the policy's message; nothing is retried.
func TestBatchJobDeniedByAdmissionPolicyFailsEveryMember(t *testing.T) {
	ns := env.Namespace(t)
	denyJobs(t, ns)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	g := gt(t)
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		fd := waitForPhase(t, ns, n, snsv1alpha1.PhaseFailed)
		g.Expect(stepOf(g, fd, "purge").Message).To(SatisfyAll(ContainSubstring("Refused for good"),
			ContainSubstring("denied request"), ContainSubstring("Jobs are frozen in this namespace")))
	}
	g.Consistently(func(g Gomega) { g.Expect(batchJobs(g, ns)).To(BeEmpty()) }).Should(Succeed())
}

// TestRunningBatchJobDeletedFailsEveryMember deletes a running batch Job:
// every member's step fails with a clear message, and the batch is not
// run again.
func TestRunningBatchJobDeletedFailsEveryMember(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	job := onlyBatchJob(t, ns)
	g := gt(t)
	g.Eventually(func(g Gomega) int32 { return stepOf(g, getFD(g, ns, "fd1"), "purge").Attempts }).Should(Equal(int32(1)))
	deleteJobAndWait(t, &job)
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		fd := waitForPhase(t, ns, n, snsv1alpha1.PhaseFailed)
		g.Expect(stepOf(g, fd, "purge").Message).To(ContainSubstring("Job fd1-purge was deleted before its outcome was recorded"))
	}
	g.Consistently(func(g Gomega) { g.Expect(batchJobs(g, ns)).To(BeEmpty()) }).Should(Succeed())
}

// TestBatchJobCreateRetriedShowsOnEveryMember holds back the batch Job's
// creation (a transient refusal): every member's step says that it is
// retried, not that a Job runs; once the creation goes through, every
// member says the Job runs.
func TestBatchJobCreateRetriedShowsOnEveryMember(t *testing.T) {
	ns := env.Namespace(t)
	lift := blockJobs(t, ns)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
	members := []string{"fd1", "fd2", "fd3"}
	for _, n := range members {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	g := gt(t)
	g.Eventually(func(g Gomega) {
		for _, n := range members {
			st := stepOf(g, getFD(g, ns, n), "purge")
			g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
			g.Expect(st.JobName).To(Equal("fd1-purge"))
			g.Expect(st.Message).To(SatisfyAll(HavePrefix("Retrying: "), ContainSubstring("status unknown for quota")), n)
		}
	}).Should(Succeed())
	g.Expect(batchJobs(g, ns)).To(BeEmpty())

	lift()
	job := onlyBatchJob(t, ns)
	g.Expect(ownerNames(&job)).To(Equal(members))
	g.Eventually(func(g Gomega) {
		for _, n := range members {
			g.Expect(stepOf(g, getFD(g, ns, n), "purge").Message).To(Equal("Running Job fd1-purge."), n)
		}
	}).Should(Succeed())
}

// TestBatchMembershipRefusedForGoodFailsThatMember: an admission policy
// refuses one member's membership write (its status with the batch Job's
// name): that member's step fails with the policy's message instead of
// being retried at every plan, and the others get their Job.
func TestBatchMembershipRefusedForGoodFailsThatMember(t *testing.T) {
	ns := env.Namespace(t)
	denyRecordedJobs(t, ns, "no batch for this one", "fd2")
	g := gt(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
	for _, n := range []string{"fd1", "fd2", "fd3"} {
		create(t, newFriendDeletion(ns, n, "app"))
	}
	fd := waitForPhase(t, ns, "fd2", snsv1alpha1.PhaseFailed)
	st := stepOf(g, fd, "purge")
	g.Expect(st.Message).To(SatisfyAll(HavePrefix("Refused for good, not retried: "), ContainSubstring("no batch for this one")))
	g.Expect(st.JobName).To(BeEmpty())
	job := onlyBatchJob(t, ns)
	g.Expect(ownerNames(&job)).To(Equal([]string{"fd1", "fd3"}))
}
