package controllers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// TestStatusPatcherRefusesASummary: a status computed from the cache's
// summary of a finished FriendDeletion is never sent, whatever changed.
func TestStatusPatcherRefusesASummary(t *testing.T) {
	ctx := context.Background()
	full := retainedFriendDeletion("fd-1")
	full.ManagedFields = nil
	writes := 0
	c := fake.NewClientBuilder().WithScheme(env.Scheme).WithObjects(full).WithStatusSubresource(&snsv1alpha1.FriendDeletion{}).
		WithInterceptorFuncs(interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, o ...client.SubResourcePatchOption) error {
			writes++
			return c.SubResource(sub).Patch(ctx, obj, p, o...)
		}}).Build()
	stored := &snsv1alpha1.FriendDeletion{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(full), stored); err != nil {
		t.Fatal(err)
	}
	summary := finishedSummary(stored.DeepCopy())

	for name, change := range map[string]func(*snsv1alpha1.FriendDeletion){
		"summarized":    func(fd *snsv1alpha1.FriendDeletion) { summarize(fd, metav1.Now()) },
		"phase changed": func(fd *snsv1alpha1.FriendDeletion) { fd.Status.Phase = snsv1alpha1.PhaseFailed },
	} {
		fd := summary.DeepCopy()
		p := newStatusPatcher(c, fd)
		change(fd)
		if err := p.Patch(ctx, fd); err == nil {
			t.Errorf("%s: Patch of a summary: no error", name)
		}
		// A full base with a summary to write is refused too.
		p = newStatusPatcher(c, stored)
		if err := p.Patch(ctx, fd); err == nil {
			t.Errorf("%s: Patch of a summary over a full base: no error", name)
		}
	}
	after := &snsv1alpha1.FriendDeletion{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(full), after); err != nil {
		t.Fatal(err)
	}
	if writes != 0 || !equality.Semantic.DeepEqual(after.Status, stored.Status) {
		t.Errorf("%d status writes; status after: %+v", writes, after.Status)
	}
}

// TestFinishedFriendDeletionIsNeverWrittenFromItsSummary runs a deletion
// with a job step and an http step to Succeeded, checks that the manager's
// cache then holds its summary, and wakes its reconcile (the request
// annotation, a Job event) several times: the stored status stays exactly
// as the last status write left it, and nothing writes it again.
func TestFinishedFriendDeletionIsNeverWrittenFromItsSummary(t *testing.T) {
	ns := env.Namespace(t)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer sink.Close()
	counter := &writeCounter{counts: map[string]int{}}
	opts := testOptions()
	m := startManagerOn(t, counter.wrap(env.Config), ns, opts)
	cfg := newConfig(ns, "app", jobStep("purge"), httpStep("notify", sink.URL, 3))
	cfg.Spec.Retention.KeepFinishedJobs = true // a Job left to send events
	create(t, cfg, newFriendDeletion(ns, "fd1", "app"))
	job := getJob(t, ns, "fd1-purge")
	setJobStatus(t, job, "complete")
	done := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g := gt(t)
	g.Expect(done.Status.Conditions).To(HaveLen(3))
	g.Expect(stepOf(g, done, "notify").Request).NotTo(BeEmpty())

	cached := &snsv1alpha1.FriendDeletion{}
	g.Eventually(func(g Gomega) {
		g.Expect(m.GetCache().Get(t.Context(), nsName(ns, "fd1"), cached)).To(Succeed())
		g.Expect(isSummary(cached)).To(BeTrue(), "the cache holds the summary of a finished FriendDeletion")
	}).Should(Succeed())
	g.Expect(cached.Status.Conditions).To(BeEmpty())
	g.Expect(cached.Spec.Pairs).To(BeEmpty())

	statusWrites := counter.total("frienddeletions/status")
	for _, v := range []string{"1", "2", "3"} {
		requestReconcile(t, ns, "fd1", v)
	}
	// A Job event: a person deletes the kept Job.
	g.Expect(env.Client.Delete(t.Context(), job)).To(Succeed())
	g.Consistently(func(g Gomega) {
		now := getFD(g, ns, "fd1")
		g.Expect(now.Status).To(Equal(done.Status))
		g.Expect(isSummary(now)).To(BeFalse())
	}).Should(Succeed())
	g.Expect(counter.total("frienddeletions/status")).To(Equal(statusWrites), "status writes after it finished:\n%s", counter)

	// The summary still drives the retention: the FriendDeletion goes once
	// its config says so.
	g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
	patch := client.MergeFrom(cfg.DeepCopy())
	cfg.Spec.Retention.Succeeded = &metav1.Duration{Duration: time.Second}
	g.Expect(env.Client.Patch(t.Context(), cfg, patch)).To(Succeed())
	requestReconcile(t, ns, "fd1", "4")
	g.Eventually(func() error {
		return env.Client.Get(t.Context(), nsName(ns, "fd1"), &snsv1alpha1.FriendDeletion{})
	}).Should(MatchError(ContainSubstring("not found")))
	g.Expect(counter.total("frienddeletions/status")).To(Equal(statusWrites))
}

// TestUnfinishedOfConfig: a config's change wakes its unfinished
// FriendDeletions only, found through their own index.
func TestUnfinishedOfConfig(t *testing.T) {
	var objs []client.Object
	for name, phase := range map[string]snsv1alpha1.Phase{
		"new": "", "pending": snsv1alpha1.PhasePending, "running": snsv1alpha1.PhaseRunning,
		"succeeded": snsv1alpha1.PhaseSucceeded, "failed": snsv1alpha1.PhaseFailed,
	} {
		fd := newFriendDeletion("ns", name, "app")
		fd.Status.Phase = phase
		objs = append(objs, fd)
	}
	objs = append(objs, newFriendDeletion("ns", "other-config", "other"), newFriendDeletion("elsewhere", "other-namespace", "app"))
	c := fake.NewClientBuilder().WithScheme(env.Scheme).WithObjects(objs...).
		WithIndex(&snsv1alpha1.FriendDeletion{}, indexUnfinishedConfigName, unfinishedConfigName).Build()
	r := &FriendDeletionReconciler{Client: c}
	var got []string
	for _, req := range r.unfinishedOfConfig(context.Background(), newConfig("ns", "app")) {
		got = append(got, req.Name)
	}
	gt(t).Expect(got).To(ConsistOf("new", "pending", "running"))
}
