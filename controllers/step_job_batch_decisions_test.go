package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// TestPlanBatch decides, for a FriendDeletion among the candidates of a
// batched step, which batch it is in and when that batch forms.
func TestPlanBatch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	c := func(name string, readyAfter time.Duration, pairs int) batchCandidate {
		return batchCandidate{name: name, readyAt: t0.Add(readyAfter), pairs: pairs, bytes: 50 * pairs}
	}
	lim := batchLimits{maxDeletions: 3, maxPairs: 1 << 30, maxBytes: 1 << 20, maxWait: 5 * time.Second}
	withPairs := func(n int) batchLimits { l := lim; l.maxPairs = n; return l }
	withBytes := func(n int) batchLimits { l := lim; l.maxBytes = n; return l }
	for _, tc := range []struct {
		name        string
		cands       []batchCandidate
		self        string
		lim         batchLimits
		now         time.Duration // after t0
		wantMembers []string
		wantWait    time.Duration
	}{
		{"alone, waits maxWait from when it became ready", []batchCandidate{c("a", 0, 1)}, "a", lim, time.Second,
			[]string{"a"}, 4 * time.Second},
		{"alone, maxWait passed: forms", []batchCandidate{c("a", 0, 1)}, "a", lim, 5 * time.Second,
			[]string{"a"}, 0},
		{"the wait counts from the first member, not self", []batchCandidate{c("b", 3*time.Second, 1), c("a", 0, 1)}, "b", lim, 4 * time.Second,
			[]string{"a", "b"}, time.Second},
		{"maxDeletions reached: forms at once", []batchCandidate{c("a", 0, 1), c("b", 0, 1), c("c", 0, 1)}, "c", lim, 0,
			[]string{"a", "b", "c"}, 0},
		{"beyond maxDeletions: the next batch waits", []batchCandidate{c("a", 0, 1), c("b", 0, 1), c("c", 0, 1), c("d", time.Second, 1)}, "d", lim, time.Second,
			[]string{"d"}, 5 * time.Second},
		{"order: ready time, then name", []batchCandidate{c("d", 0, 1), c("c", 0, 1), c("b", 0, 1), c("a", -time.Second, 1)}, "d", lim, 0,
			[]string{"d"}, 5 * time.Second},
		{"maxPairs splits: the next does not fit, the first batch forms", []batchCandidate{c("a", 0, 2), c("b", 0, 2), c("c", 0, 3)}, "b", withPairs(4), 0,
			[]string{"a", "b"}, 0},
		{"maxPairs splits: the rest waits", []batchCandidate{c("a", 0, 2), c("b", 0, 2), c("c", 0, 3)}, "c", withPairs(4), 0,
			[]string{"c"}, 5 * time.Second},
		{"maxPairs reached exactly: forms", []batchCandidate{c("a", 0, 2), c("b", 0, 2)}, "a", withPairs(4), 0,
			[]string{"a", "b"}, 0},
		{"more pairs than maxPairs: a batch alone, at once", []batchCandidate{c("a", 0, 9)}, "a", withPairs(4), 0,
			[]string{"a"}, 0},
		{"more pairs than maxPairs after others: they form without it", []batchCandidate{c("a", 0, 1), c("b", time.Second, 9)}, "a", withPairs(4), time.Second,
			[]string{"a"}, 0},
		{"the pairs file's size splits too", []batchCandidate{c("a", 0, 1), c("b", 0, 1)}, "b", withBytes(60), 0,
			[]string{"b"}, 5 * time.Second},
		{"self not a candidate", []batchCandidate{c("a", 0, 1)}, "z", lim, 0, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			batch, wait := planBatch(tc.cands, tc.self, tc.lim, t0.Add(tc.now))
			var names []string
			for _, b := range batch {
				names = append(names, b.name)
			}
			g.Expect(names).To(Equal(tc.wantMembers))
			g.Expect(wait).To(Equal(tc.wantWait))
		})
	}
}

// TestBatchCandidateKey decides which FriendDeletions a batch may take for
// which step.
func TestBatchCandidateKey(t *testing.T) {
	step := func(name string, phase snsv1alpha1.Phase) snsv1alpha1.StepStatus {
		return snsv1alpha1.StepStatus{Name: name, Type: snsv1alpha1.StepTypeJob, Phase: phase}
	}
	for _, tc := range []struct {
		name  string
		phase snsv1alpha1.Phase
		steps []snsv1alpha1.StepStatus
		want  string
	}{
		{"steps not fixed: a candidate for the config's first step", "", nil, "app/"},
		{"first step Pending", snsv1alpha1.PhasePending, []snsv1alpha1.StepStatus{step("purge", "Pending"), step("notify", "Pending")}, "app/purge"},
		{"second step Pending after the first succeeded", snsv1alpha1.PhaseRunning, []snsv1alpha1.StepStatus{step("notify", "Succeeded"), step("purge", "Pending")}, "app/purge"},
		{"current step Running: in a Job already", snsv1alpha1.PhaseRunning, []snsv1alpha1.StepStatus{step("purge", "Running"), step("notify", "Pending")}, ""},
		{"a step failed", snsv1alpha1.PhaseFailed, []snsv1alpha1.StepStatus{step("notify", "Failed"), step("purge", "Pending")}, ""},
		{"finished without steps (config not found)", snsv1alpha1.PhaseFailed, nil, ""},
		{"every step succeeded", snsv1alpha1.PhaseSucceeded, []snsv1alpha1.StepStatus{step("purge", "Succeeded")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := newFriendDeletion("ns", "fd1", "app")
			fd.Status.Phase, fd.Status.Steps = tc.phase, tc.steps
			NewWithT(t).Expect(batchCandidateKey(fd)).To(Equal(tc.want))
		})
	}
}

// TestBatchPairsFile checks the batch pairs file's format, and that what
// planBatch counts for each member (batchFileBytes) adds up to its size.
func TestBatchPairsFile(t *testing.T) {
	g := NewWithT(t)
	a := newFriendDeletion("ns", "fd-a", "app", snsv1alpha1.FriendPair{From: "alice", To: "bob"}, snsv1alpha1.FriendPair{From: "alice", To: "c<a>r&l"})
	b := newFriendDeletion("ns", "fd-b", "app", snsv1alpha1.FriendPair{From: "dave\"\n\u2028", To: "erin\x01\xff"})
	file, err := batchPairsFile([]*snsv1alpha1.FriendDeletion{a, b})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(file)).To(HavePrefix(`{"deletions":["fd-a","fd-b"],"pairs":[{"frienddeletion":"fd-a","from":"alice","to":"bob"},{"frienddeletion":"fd-a","from":"alice","to":"c<a>r&l"},`))
	var parsed batchFile
	g.Expect(json.Unmarshal(file, &parsed)).To(Succeed())
	g.Expect(parsed.Pairs).To(HaveLen(3))
	g.Expect(parsed.Pairs[2].FriendDeletion).To(Equal("fd-b"))
	empty := len(`{"deletions":[],"pairs":[]}`)
	// Each member adds its bytes, one comma too many for the last of each list.
	g.Expect(empty + batchFileBytes(a) + batchFileBytes(b) - 2).To(Equal(len(file)))

	env := batchEnv([]*snsv1alpha1.FriendDeletion{a, b})
	g.Expect(envValue(env, EnvFriendDeletionCount)).To(Equal("2"))
	g.Expect(envValue(env, EnvPairCount)).To(Equal("3"))
	g.Expect(envValue(env, EnvPairsFile)).To(Equal(PairsFile))
	g.Expect(envValue(env, EnvFromAccount)).To(BeEmpty())
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestJSONStringLen holds jsonStringLen to encoding/json without HTML
// escaping.
func TestJSONStringLen(t *testing.T) {
	for _, s := range []string{"", "alice", `a"b\c`, "tab\there\nnl\r", "back\bspace\fform", "\x00\x1f", "<>&", "中文", "\u2028\u2029", "bad\xff\xfeutf8", strings.Repeat("x", 300)} {
		t.Run(fmt.Sprintf("%q", s), func(t *testing.T) {
			f, err := batchPairsFile([]*snsv1alpha1.FriendDeletion{{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: snsv1alpha1.FriendDeletionSpec{Pairs: []snsv1alpha1.FriendPair{{From: s, To: "t"}}}}})
			NewWithT(t).Expect(err).NotTo(HaveOccurred())
			want := len(f) - len(`{"deletions":["n"],"pairs":[{"frienddeletion":"n","from":,"to":"t"}]}`)
			NewWithT(t).Expect(jsonStringLen(s)).To(Equal(want))
		})
	}
}

// BenchmarkPlanBatches plans 1000 waiting candidates into batches of 100,
// as each reconcile of a batched step does.
func BenchmarkPlanBatches(b *testing.B) {
	t0 := time.Now()
	cands := make([]batchCandidate, 1000)
	for i := range cands {
		cands[i] = batchCandidate{name: fmt.Sprintf("fd-%05d", i), readyAt: t0.Add(time.Duration(i%50) * time.Millisecond), pairs: 1, bytes: 70}
	}
	lim := batchLimits{maxDeletions: 100, maxPairs: 1 << 30, maxBytes: MaxPairsFile, maxWait: 5 * time.Second}
	b.ReportAllocs()
	for b.Loop() {
		planBatches(slices.Clone(cands), lim, t0)
	}
}

// TestBatchPairsFileTooLarge: a batch whose pairs file is larger than a
// ConfigMap holds is refused for good, and the message every member gets
// (failMembers writes it) gives the file's size and the limit in bytes.
func TestBatchPairsFileTooLarge(t *testing.T) {
	g := NewWithT(t)
	long := strings.Repeat("x", 100)
	var members []*snsv1alpha1.FriendDeletion
	size := len(`{"deletions":[],"pairs":[]}`) - 2
	for i := range 2 {
		m := newFriendDeletion("ns", fmt.Sprintf("fd%d", i), "app")
		for j := range 3000 {
			m.Spec.Pairs = append(m.Spec.Pairs, snsv1alpha1.FriendPair{From: long, To: fmt.Sprintf("%s%04d", long, j)})
		}
		members = append(members, m)
		size += batchFileBytes(m)
	}
	g.Expect(size).To(BeNumerically(">", MaxPairsFile))
	_, err := batchPairsFile(members)
	g.Expect(isPermanent(err)).To(BeTrue(), "%v", err)
	figures := fmt.Sprintf("the pairs file is %d bytes, more than the %d a ConfigMap can hold", size, MaxPairsFile)
	g.Expect(err.Error()).To(Equal(figures))

	// Creating the batch Job fails every member's step with those figures:
	// fd0's (the reconcile's own, written with its status) and the others'.
	ctx := context.Background()
	objs := []client.Object{}
	for _, m := range members {
		m.UID = types.UID("uid-" + m.Name)
		m.Status.Steps = []snsv1alpha1.StepStatus{{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseRunning, JobName: "fd0-purge", Message: jobRunningMessage("fd0-purge")}}
		objs = append(objs, m)
	}
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(objs...).WithStatusSubresource(&snsv1alpha1.FriendDeletion{}).Build()
	for _, m := range members {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(m), m)).To(Succeed())
	}
	r := &FriendDeletionReconciler{Client: c, APIReader: c, Options: DefaultOptions()}
	fd := members[0]
	_, err = r.finishBatchCreate(ctx, fd, stepstatus.Find(fd, "purge"), jobStep("purge").Job, "fd0-purge", members)
	g.Expect(err).NotTo(HaveOccurred(), "refused for good: not retried")
	g.Expect(stepstatus.Find(fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseFailed))
	g.Expect(stepstatus.Find(fd, "purge").Message).To(Equal("Refused for good, not retried: " + figures))
	stored := &snsv1alpha1.FriendDeletion{}
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(members[1]), stored)).To(Succeed())
	g.Expect(stepstatus.Find(stored, "purge").Phase).To(Equal(snsv1alpha1.PhaseFailed))
	g.Expect(stepstatus.Find(stored, "purge").Message).To(Equal("Refused for good, not retried: " + figures))
	var jobs batchv1.JobList
	g.Expect(c.List(ctx, &jobs)).To(Succeed())
	g.Expect(jobs.Items).To(BeEmpty())
}
