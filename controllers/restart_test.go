package controllers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func jobsOf(g Gomega, ns, fd string) []batchv1.Job {
	var jobs batchv1.JobList
	g.Expect(env.Client.List(context.Background(), &jobs, client.InNamespace(ns), client.MatchingLabels{snsv1alpha1.LabelFriendDeletion: fd})).To(Succeed())
	return jobs.Items
}

// TestRestartDoesNotCreateASecondJob stops the manager once the Job
// exists and starts a new one, twice.
func TestRestartDoesNotCreateASecondJob(t *testing.T) {
	ns := env.Namespace(t)
	m1 := startManager(t, ns, testOptions())
	cfg := newConfig(ns, "app", jobStep("purge"))
	cfg.Spec.Retention.KeepFinishedJobs = true // the finished Job stays to be counted
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	job := getJob(t, ns, "fd1-purge")
	m1.Stop()

	startManager(t, ns, testOptions())
	waitForJobRecorded(t, ns, "fd1", "purge")
	g := gt(t)
	g.Consistently(func(g Gomega) {
		g.Expect(jobsOf(g, ns, "fd1")).To(HaveLen(1))
		fd := getFD(g, ns, "fd1")
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(stepOf(g, fd, "purge").JobName).To(Equal("fd1-purge"))
	}).Should(Succeed())
	setJobStatus(t, job, "complete")
	waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(jobsOf(g, ns, "fd1")).To(HaveLen(1))
}

// TestRestartMidRequestDoesNotRepeatASuccessfulPOST stops the manager while
// its first POST is in flight, then restarts it twice: the step succeeds
// with exactly one successful POST, all with the same idempotency key.
func TestRestartMidRequestDoesNotRepeatASuccessfulPOST(t *testing.T) {
	ns := env.Namespace(t)
	var (
		mu        sync.Mutex
		requests  int
		succeeded int
		keys      = map[string]bool{}
	)
	inFlight := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body, so the server notices the client going away.
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		requests++
		n := requests
		keys[r.Header.Get(IdempotencyKeyHeader)] = true
		mu.Unlock()
		if n == 1 {
			close(inFlight)
			<-r.Context().Done() // hang until the manager goes away
			return
		}
		mu.Lock()
		succeeded++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	m1 := startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", httpStep("notify", srv.URL, 5)), newFriendDeletion(ns, "fd1", "app"))
	<-inFlight
	m1.Stop()

	m2 := startManager(t, ns, testOptions())
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g := gt(t)
	st := stepOf(g, fd, "notify")
	g.Expect(st.Attempts).To(Equal(int32(2)), "the interrupted attempt counts")
	m2.Stop()

	startManager(t, ns, testOptions())
	g.Consistently(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(succeeded).To(Equal(1))
		g.Expect(requests).To(Equal(2))
		g.Expect(getFD(g, ns, "fd1").Status.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	}).Should(Succeed())
	g.Expect(keys).To(Equal(map[string]bool{string(fd.UID) + "/notify": true}))
}

// deleteJobAndWait deletes a Job (as a janitor or a person would) and waits
// until it is gone.
func deleteJobAndWait(t *testing.T, job *batchv1.Job) {
	t.Helper()
	g := gt(t)
	g.Expect(env.Client.Delete(t.Context(), job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(env.Client.Get(t.Context(), client.ObjectKeyFromObject(job), &batchv1.Job{}))
	}).Should(BeTrue())
}

// TestJobDeletedWhileNoManagerRunsIsNotCreatedAgain stops the manager once
// the Job was created and recorded, deletes the Job (still running, or
// completed with its outcome not yet recorded) and starts a new manager,
// which has seen no deletion: the step fails from what the status
// recorded, and no Job is created again.
func TestJobDeletedWhileNoManagerRunsIsNotCreatedAgain(t *testing.T) {
	for _, outcome := range []string{"running", "complete"} {
		t.Run(outcome, func(t *testing.T) {
			ns := env.Namespace(t)
			m1 := startManager(t, ns, testOptions())
			create(t, newConfig(ns, "app", jobStep("purge")), newFriendDeletion(ns, "fd1", "app"))
			job := getJob(t, ns, "fd1-purge")
			g := gt(t)
			g.Eventually(func(g Gomega) int32 { return stepOf(g, getFD(g, ns, "fd1"), "purge").Attempts }).
				Should(Equal(int32(1)), "the Job's creation is recorded")
			m1.Stop()
			if outcome == "complete" {
				setJobStatus(t, job, "complete")
			}
			deleteJobAndWait(t, job)

			startManager(t, ns, testOptions())
			fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
			g.Expect(stepOf(g, fd, "purge").Message).To(ContainSubstring("Job fd1-purge was deleted before its outcome was recorded"))
			g.Consistently(func(g Gomega) {
				g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty(), "the Job is not created again")
			}).Should(Succeed())
		})
	}
}

// TestBatchJobDeletedWhileNoManagerRunsIsNotCreatedAgain is the same for a
// batch Job: the first member records the Job created, and after the
// restart every member fails from that record; the batch is not run again.
func TestBatchJobDeletedWhileNoManagerRunsIsNotCreatedAgain(t *testing.T) {
	members := []string{"fd1", "fd2", "fd3"}
	for _, outcome := range []string{"running", "complete"} {
		t.Run(outcome, func(t *testing.T) {
			ns := env.Namespace(t)
			m1 := startManager(t, ns, testOptions())
			create(t, newConfig(ns, "app", batchJobStep("purge", 3, 0, 10*time.Minute)))
			for _, n := range members {
				create(t, newFriendDeletion(ns, n, "app"))
			}
			job := onlyBatchJob(t, ns)
			g := gt(t)
			g.Expect(job.Name).To(Equal("fd1-purge"))
			g.Eventually(func(g Gomega) int32 { return stepOf(g, getFD(g, ns, "fd1"), "purge").Attempts }).
				Should(Equal(int32(1)), "the first member records the Job's creation")
			m1.Stop()
			for _, n := range members[1:] {
				g.Expect(stepOf(g, getFD(g, ns, n), "purge").Attempts).To(BeZero(), "one write records the batch Job")
			}
			if outcome == "complete" {
				setJobStatus(t, &job, "complete")
			}
			deleteJobAndWait(t, &job)

			startManager(t, ns, testOptions())
			for _, n := range members {
				fd := waitForPhase(t, ns, n, snsv1alpha1.PhaseFailed)
				g.Expect(stepOf(g, fd, "purge").Message).To(ContainSubstring("Job fd1-purge was deleted before its outcome was recorded"))
			}
			g.Consistently(func(g Gomega) {
				g.Expect(batchJobs(g, ns)).To(BeEmpty(), "the batch Job is not created again")
			}).Should(Succeed())
		})
	}
}
