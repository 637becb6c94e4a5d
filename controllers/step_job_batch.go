package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// A batched job step (cleanup[].batch) runs one Job for a group of a
// config's FriendDeletions ready for the step. How a group forms, and how
// a restart finds it again:
//
//  1. A FriendDeletion whose current step is a batched job step, Pending,
//     finds the other candidates through the indexBatchCandidate field
//     index, and plans the groups (planBatches): in the order they became
//     ready, as many as maxDeletions, maxPairs and the pairs file's size
//     allow. A group is due when it is full, or once its first member has
//     waited maxWait. The reconcile forms every due group (its own and
//     others'); until its own is due the FriendDeletion waits (without a
//     write when its step list is not stored yet: the join writes it).
//  2. Membership comes first: each member's step is written Running with
//     the Job's name (the first member's Job name, `<first>-<step>`),
//     under an optimistic lock, the first member first, then the others
//     several at once. A member whose write is refused (it changed, or
//     joined another group) is left out; if the first member's is, the
//     group is not formed.
//  3. Then the Job is created for exactly the members whose write went
//     through, each an owner of the Job, and the first member records it
//     created (attempts 1): one write for the batch. A manager stopped
//     between 2 and 3 is followed by one whose reconcile of any member
//     finds the Job missing with no member recording it created (the
//     indexCreatedJob field index), and creates it for the members the
//     indexRunningJob field index finds with that Job name recorded: the
//     same members. A Job missing once it was recorded created fails every
//     member's step: the batch is never run twice.
//  4. A member whose status names a Job that exists without it (a
//     membership write that the Job's creation did not see) goes back to
//     Pending and joins another group: never two Jobs for one deletion.
//
// Every member follows the Job as a one-deletion step follows its own, and
// the last to record the outcome deletes the Job (deleteFinishedJobs).
// Forming and re-creating hold a lock per config and step, so two workers
// of one manager never form overlapping groups.

// The batch Job contract (see the README), besides the variables it shares
// with the one-deletion contract.
const (
	// EnvFriendDeletionCount is the number of FriendDeletions a batch Job
	// serves.
	EnvFriendDeletionCount = "FRIEND_DELETION_COUNT"
	// LabelBatch is on batch Jobs (and their pods and ConfigMaps), with the
	// number of FriendDeletions the Job serves.
	LabelBatch = "sns.imcallback.io/batch"
	// MemberLabelPrefix starts the key of the label a batch Job carries
	// for each FriendDeletion it serves:
	// frienddeletion.sns.imcallback.io/<name>, value empty. Names longer
	// than 63 characters are cut, with a hash (see memberLabelKey).
	MemberLabelPrefix = "frienddeletion.sns.imcallback.io/"
)

// Field indexes of the FriendDeletions a batch is formed from.
const (
	// indexBatchCandidate indexes unfinished FriendDeletions whose steps
	// may start by "<config>/<step>", for the current step when it is
	// Pending, and by "<config>/" when their steps are not fixed yet.
	indexBatchCandidate = "status.batchCandidate"
	// indexRunningJob indexes FriendDeletions by the Job names their
	// Running job steps record.
	indexRunningJob = "status.steps.runningJob"
	// indexCreatedJob indexes FriendDeletions by the Job names their job
	// steps record as created or seen (attempts > 0), in any phase: how a
	// batch member whose Job is missing learns that the Job was created
	// (jobCreated), from the first member's record or another member's
	// outcome.
	indexCreatedJob = "status.steps.createdJob"
)

// batchReplanDelay is how soon a FriendDeletion plans its batch again
// after the write that made it a candidate.
const batchReplanDelay = 250 * time.Millisecond

// batchRecheckDelay is how soon a member that recorded its batch Job's
// outcome looks again whether every other member has, to delete the Job.
const batchRecheckDelay = time.Second

// batchCandidateKey is the FriendDeletion's indexBatchCandidate value, or
// "" when it is no candidate.
func batchCandidateKey(fd *snsv1alpha1.FriendDeletion) string {
	if fd.Status.Phase.Finished() || !fd.DeletionTimestamp.IsZero() || !stepsMayStart(fd) {
		return ""
	}
	if len(fd.Status.Steps) == 0 {
		return fd.Spec.ConfigName + "/"
	}
	for _, st := range fd.Status.Steps {
		switch st.Phase {
		case snsv1alpha1.PhaseSucceeded:
			continue
		case snsv1alpha1.PhasePending:
			return fd.Spec.ConfigName + "/" + st.Name
		}
		return ""
	}
	return ""
}

// runningJobs is the FriendDeletion's indexRunningJob values.
func runningJobs(fd *snsv1alpha1.FriendDeletion) []string {
	var out []string
	for _, st := range fd.Status.Steps {
		if st.Type == snsv1alpha1.StepTypeJob && st.Phase == snsv1alpha1.PhaseRunning && st.JobName != "" {
			out = append(out, st.JobName)
		}
	}
	return out
}

// createdJobs is the FriendDeletion's indexCreatedJob values.
func createdJobs(fd *snsv1alpha1.FriendDeletion) []string {
	var out []string
	for _, st := range fd.Status.Steps {
		if st.Type == snsv1alpha1.StepTypeJob && st.Attempts > 0 && st.JobName != "" {
			out = append(out, st.JobName)
		}
	}
	return out
}

// batchCandidate is what planBatch needs to know of a FriendDeletion.
type batchCandidate struct {
	name    string
	readyAt time.Time // when it became ready for the step
	pairs   int
	bytes   int // what it adds to the batch pairs file
}

// batchLimits bound one batch.
type batchLimits struct {
	maxDeletions, maxPairs, maxBytes int
	maxWait                          time.Duration
}

func limitsOf(b *snsv1alpha1.JobBatch) batchLimits {
	l := batchLimits{maxDeletions: int(b.MaxDeletions), maxPairs: int(^uint(0) >> 1), maxBytes: MaxPairsFile - len(`{"deletions":[],"pairs":[]}`)}
	if b.MaxPairs != nil {
		l.maxPairs = int(*b.MaxPairs)
	}
	if b.MaxWait != nil {
		l.maxWait = b.MaxWait.Duration
	}
	l.maxDeletions = max(l.maxDeletions, 1)
	return l
}

// plannedBatch is one batch of a plan, and how long until it forms.
type plannedBatch struct {
	members []batchCandidate
	wait    time.Duration
}

// planBatches splits the candidates, in the order they became ready (then
// by name), into batches: each takes the next candidates while it has
// fewer than maxDeletions and the next one fits in maxPairs and maxBytes;
// the first candidate of a batch always fits, so one with more pairs than
// maxPairs is a batch alone. A batch forms at once (wait 0) when it is
// full (it reached maxDeletions or maxPairs, or the next candidate did not
// fit) or its first member has waited maxWait; otherwise wait is how long
// until then.
func planBatches(cands []batchCandidate, lim batchLimits, now time.Time) []plannedBatch {
	slices.SortFunc(cands, func(a, b batchCandidate) int {
		if c := a.readyAt.Compare(b.readyAt); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	var out []plannedBatch
	for start := 0; start < len(cands); {
		end, pairs, size := start+1, cands[start].pairs, cands[start].bytes
		for end < len(cands) && end-start < lim.maxDeletions &&
			pairs+cands[end].pairs <= lim.maxPairs && size+cands[end].bytes <= lim.maxBytes {
			pairs += cands[end].pairs
			size += cands[end].bytes
			end++
		}
		b := plannedBatch{members: cands[start:end]}
		if end-start < lim.maxDeletions && pairs < lim.maxPairs && end == len(cands) {
			b.wait = max(0, cands[start].readyAt.Add(lim.maxWait).Sub(now))
		}
		out = append(out, b)
		start = end
	}
	return out
}

// planBatch is the batch of planBatches holding the candidate named self
// (nil when there is none) and how long until it forms.
func planBatch(cands []batchCandidate, self string, lim batchLimits, now time.Time) ([]batchCandidate, time.Duration) {
	for _, b := range planBatches(cands, lim, now) {
		if slices.ContainsFunc(b.members, func(c batchCandidate) bool { return c.name == self }) {
			return b.members, b.wait
		}
	}
	return nil, 0
}

// wakeUp asks for a reconcile of the named FriendDeletion, unless as many
// are asked for already (each batch member also wakes when its own wait
// ends).
func (r *FriendDeletionReconciler) wakeUp(ns, name string) {
	if r.wake == nil {
		return
	}
	fd := &snsv1alpha1.FriendDeletion{}
	fd.Namespace, fd.Name = ns, name
	select {
	case r.wake <- ctrlevent.GenericEvent{Object: fd}:
	default:
	}
}

// readySince is when the FriendDeletion became ready for the step: when the
// step before it completed, or its creation for the first step.
func readySince(fd *snsv1alpha1.FriendDeletion, step string) time.Time {
	for i, st := range fd.Status.Steps {
		if st.Name == step {
			if i > 0 && fd.Status.Steps[i-1].CompletionTime != nil {
				return fd.Status.Steps[i-1].CompletionTime.Time
			}
			break
		}
	}
	return fd.CreationTimestamp.Time
}

// batchState is what a reconciler remembers of the batches it forms.
type batchState struct {
	locks sync.Map // "<ns>/<config>/<step>" -> *sync.Mutex
	mu    sync.Mutex
	// joined holds FriendDeletions written into a batch whose write the
	// cache may not show yet, with the Job's name.
	joined map[types.NamespacedName]string
	// members holds, per batch Job ("<ns>/<job>") not yet created, the
	// FriendDeletions written into it.
	members map[string][]string
}

func (r *FriendDeletionReconciler) batchState() *batchState {
	r.batchOnce.Do(func() {
		r.batches = &batchState{joined: map[types.NamespacedName]string{}, members: map[string][]string{}}
	})
	return r.batches
}

// lock takes the lock of a config's step, for forming its batches.
func (b *batchState) lock(ns, config, step string) func() {
	m, _ := b.locks.LoadOrStore(ns+"/"+config+"/"+step, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func (b *batchState) joinedTo(key types.NamespacedName) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	job, ok := b.joined[key]
	return job, ok
}

func (b *batchState) forget(key types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.joined, key)
}

// joinBatch is a Pending batched job step: it plans the step's batches and,
// when the FriendDeletion's batch is due, writes every member Running with
// the batch Job's name and creates the Job. Otherwise it asks to be called
// again when the batch is due. Sets the step condition Running (or Failed,
// for a Job refused for good).
func (r *FriendDeletionReconciler) joinBatch(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, spec *snsv1alpha1.CleanupStep, st *snsv1alpha1.StepStatus) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(fd)
	bs := r.batchState()
	if _, ok := bs.joinedTo(key); ok {
		// Written into a batch a moment ago; the cache has not caught up.
		deferStatus(ctx)
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
	}
	unlock := bs.lock(fd.Namespace, fd.Spec.ConfigName, st.Name)
	defer unlock()
	if _, ok := bs.joinedTo(key); ok {
		// Written into a batch while this reconcile waited for the lock.
		deferStatus(ctx)
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
	}

	cands, err := r.batchCandidates(ctx, fd, cfg, st.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	infos := make([]batchCandidate, 0, len(cands))
	for _, c := range cands {
		infos = append(infos, batchCandidate{name: c.Name, readyAt: readySince(c, st.Name), pairs: len(stepPairs(c)), bytes: batchFileBytes(c)})
	}
	byName := make(map[string]*snsv1alpha1.FriendDeletion, len(cands))
	for _, c := range cands {
		byName[c.Name] = c
	}
	var batch []batchCandidate
	var wait time.Duration
	for _, b := range planBatches(infos, limitsOf(spec.Batch), r.Options.Clock.Now()) {
		switch {
		case slices.ContainsFunc(b.members, func(c batchCandidate) bool { return c.name == fd.Name }):
			batch, wait = b.members, b.wait
		case b.wait == 0:
			// Another batch is due, perhaps closed by this FriendDeletion
			// not fitting in it: it forms now, not when its wait ends.
			r.formOtherBatch(ctx, p, fd, cfg, spec, st.Name, b.members, byName)
		}
	}
	if len(batch) == 0 {
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
	}
	if wait > 0 {
		switch {
		case onlyStepListNew(p, fd):
			// The join writes the step list; waiting writes nothing.
			deferStatus(ctx)
		case batchCandidateKey(p.base) != batchCandidateKey(fd):
			// This reconcile's write makes the FriendDeletion a
			// candidate (its verification or its previous step just
			// ended), so those planning at the same time could not see
			// it: plan again once the write is stored, so that a batch
			// full by then forms without waiting out maxWait.
			wait = min(wait, batchReplanDelay)
		}
		ctrl.LoggerFrom(ctx).V(1).Info("waiting for the batch to fill", "wait", wait, "members", len(batch))
		return ctrl.Result{RequeueAfter: wait}, nil
	}

	name := jobName(batch[0].name, st.Name)
	members, err := r.writeMembers(ctx, p, fd, cfg, st.Name, name, batch, byName)
	// A membership of fd's refused for good failed its step (written now).
	refused := stepstatus.Find(fd, st.Name).Phase == snsv1alpha1.PhaseFailed
	if err != nil || len(members) == 0 {
		if err == nil && onlyStepListNew(p, fd) && !refused {
			deferStatus(ctx) // plan again, from newer objects
		}
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, err
	}
	if !slices.Contains(members, fd) {
		// This FriendDeletion's own write was refused: again, from the
		// newer object (or, refused for good, its step fails); the
		// members it wrote get their Job now.
		if !refused {
			deferStatus(ctx)
		}
		r.createForMembers(ctx, fd.Namespace, st.Name, spec.Job, name, members)
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
	}
	st = stepstatus.Find(fd, st.Name) // the write replaced fd's status
	return r.finishBatchCreate(ctx, fd, st, spec.Job, name, members)
}

// onlyStepListNew reports whether all this reconcile would write is the
// step list of a FriendDeletion seen for the first time, which joining a
// batch writes anyway. A verification's answers are written at once: they
// make the deletion a candidate for the others' batches.
func onlyStepListNew(p *statusPatcher, fd *snsv1alpha1.FriendDeletion) bool {
	return len(p.base.Status.Steps) == 0 && !verificationUnwritten(p, fd)
}

// memberWrites is how many membership writes of one batch are in flight at
// once, after the first member's.
const memberWrites = 16

// writeMembers writes each member of a planned batch Running with the
// batch Job's name, the first member first and then the others, several at
// once, and returns those whose write went through (in the batch's order);
// none when the first member's was refused.
func (r *FriendDeletionReconciler) writeMembers(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, step, name string, batch []batchCandidate, byName map[string]*snsv1alpha1.FriendDeletion) ([]*snsv1alpha1.FriendDeletion, error) {
	log := ctrl.LoggerFrom(ctx)
	objs := make([]*snsv1alpha1.FriendDeletion, len(batch))
	for i, b := range batch {
		objs[i] = byName[b.name]
		if objs[i] != fd {
			objs[i] = objs[i].DeepCopy() // byName holds the cache's own objects
		}
	}
	joined := make([]bool, len(batch))
	var err error
	if joined[0], err = r.recordMembership(ctx, p, fd, objs[0], cfg, step, name); err != nil || !joined[0] {
		return nil, err // the first member changed since it was read, or cannot be written
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, memberWrites)
	for i := 1; i < len(objs); i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ok, err := r.recordMembership(ctx, p, fd, objs[i], cfg, step, name)
			if err != nil {
				log.Info("a FriendDeletion could not join a batch; it waits for the next", "member", objs[i].Name, "job", name, "error", err.Error())
			}
			joined[i] = ok && err == nil
		}()
	}
	wg.Wait()
	var members []*snsv1alpha1.FriendDeletion
	for i, m := range objs {
		if joined[i] {
			members = append(members, m)
		}
	}
	bs := r.batchState()
	bs.mu.Lock()
	for _, m := range members {
		bs.joined[client.ObjectKeyFromObject(m)] = name
		bs.members[fd.Namespace+"/"+name] = append(bs.members[fd.Namespace+"/"+name], m.Name)
	}
	bs.mu.Unlock()
	log.V(1).Info("formed a batch", "job", name, "members", len(members))
	return members, nil
}

// formOtherBatch forms a due batch that fd is not in (createForMembers).
func (r *FriendDeletionReconciler) formOtherBatch(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, spec *snsv1alpha1.CleanupStep, step string, batch []batchCandidate, byName map[string]*snsv1alpha1.FriendDeletion) {
	name := jobName(batch[0].name, step)
	members, err := r.writeMembers(ctx, p, fd, cfg, step, name, batch, byName)
	if err != nil || len(members) == 0 {
		r.wakeUp(fd.Namespace, batch[0].name) // it plans again
		return
	}
	r.createForMembers(ctx, fd.Namespace, step, spec.Job, name, members)
}

// createForMembers creates the batch Job of members that do not include
// the FriendDeletion being reconciled. A Job that could not be created is
// left to its first member's reconcile (recreateBatchJob), which it wakes,
// and every member's step says so; one refused for good fails every
// member's step.
func (r *FriendDeletionReconciler) createForMembers(ctx context.Context, ns, step string, tmpl *batchv1.JobTemplateSpec, name string, members []*snsv1alpha1.FriendDeletion) {
	log := ctrl.LoggerFrom(ctx)
	_, err := r.createBatchJob(ctx, ns, step, tmpl, name, members)
	switch {
	case err == nil:
		r.recordBatchJobCreated(ctx, nil, step, name, members)
	case isPermanent(err):
		if err := r.failMembers(ctx, members, nil, step, err); err != nil {
			log.Error(err, "failing the members of a batch Job refused for good", "job", name)
		}
	default:
		log.Info("creating a batch Job failed; its first member tries again", "job", name, "error", err.Error())
		r.retryMembers(ctx, members, nil, step, err)
		r.wakeUp(ns, members[0].Name)
	}
}

// finishBatchCreate creates the batch Job for the members (fd among them)
// and reports the outcome on fd's step; a Job refused for good fails every
// member's step, and one that failed otherwise is retried by fd's
// reconcile, as every member's step says.
func (r *FriendDeletionReconciler) finishBatchCreate(ctx context.Context, fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, tmpl *batchv1.JobTemplateSpec, name string, members []*snsv1alpha1.FriendDeletion) (ctrl.Result, error) {
	created, err := r.createBatchJob(ctx, fd.Namespace, st.Name, tmpl, name, members)
	switch {
	case isPermanent(err):
		if ferr := r.failMembers(ctx, members, fd, st.Name, err); ferr != nil {
			return ctrl.Result{}, ferr
		}
		return r.jobCreateFailed(fd, st, err)
	case err != nil:
		r.retryMembers(ctx, members, fd, st.Name, err)
		return r.jobCreateFailed(fd, st, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("created batch Job", "job", name, "members", len(members), "created", created)
	r.recordBatchJobCreated(ctx, fd, st.Name, name, members)
	return ctrl.Result{}, nil
}

// recordBatchJobCreated records, once a batch Job exists, that it was
// created (attempts 1) on one member: the first (the Job is named after
// it), or the first of members when it is not among them. That one write
// serves the whole batch: every member finds it through the
// indexCreatedJob index when the Job is missing (jobCreated). A member
// whose step says something else than that it runs the Job (a create that
// failed before: "Retrying: ...") is told so too; in a batch formed now
// none does. What concerns fd, the FriendDeletion being reconciled (nil
// when none of them is), goes with the reconcile's status write. A write
// that fails is made by the member's own reconcile when it sees the Job.
func (r *FriendDeletionReconciler) recordBatchJobCreated(ctx context.Context, fd *snsv1alpha1.FriendDeletion, step, name string, members []*snsv1alpha1.FriendDeletion) {
	if len(members) == 0 {
		return
	}
	first := members[0]
	for _, m := range members {
		if jobName(m.Name, step) == name {
			first = m
			break
		}
	}
	now := r.now()
	for _, m := range members {
		if fd != nil && m.Name == fd.Name {
			if st := stepstatus.Find(fd, step); st != nil && st.JobName == name && st.Phase == snsv1alpha1.PhaseRunning {
				if m == first {
					st.Attempts = max(st.Attempts, 1)
				}
				stepstatus.Mark(fd, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(name), now)
			}
			continue
		}
		st := stepstatus.Find(m, step)
		if st == nil || st.JobName != name || st.Phase != snsv1alpha1.PhaseRunning ||
			((m != first || st.Attempts > 0) && st.Message == jobRunningMessage(name)) {
			continue // nothing to record
		}
		c := m.DeepCopy() // perhaps the cache's own object
		pt := r.memberPatcher(c)
		st = stepstatus.Find(c, step)
		if m == first {
			st.Attempts = max(st.Attempts, 1)
		}
		stepstatus.Mark(c, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(name), now)
		summarize(c, now)
		if err := pt.Patch(ctx, c); err != nil {
			ctrl.LoggerFrom(ctx).V(1).Info("recording a batch Job on a member failed; the member records it when it sees the Job",
				"job", name, "member", c.Name, "error", err.Error())
		}
	}
}

// retryMembers says on the step of every member but skip that creating
// their batch Job failed and is tried again ("Retrying: ...", as the
// member whose reconcile retries it says), rather than that it runs a Job
// that does not exist. A write that fails is not retried: the message is
// only news.
func (r *FriendDeletionReconciler) retryMembers(ctx context.Context, members []*snsv1alpha1.FriendDeletion, skip *snsv1alpha1.FriendDeletion, step string, err error) {
	msg := fmt.Sprintf("Retrying: %v", err)
	now := r.now()
	for _, m := range members {
		if m == skip {
			continue
		}
		if st := stepstatus.Find(m, step); st == nil || st.Phase != snsv1alpha1.PhaseRunning || st.Message == msg {
			continue
		}
		c := m.DeepCopy() // perhaps the cache's own object
		pt := r.memberPatcher(c)
		stepstatus.Set(stepstatus.Find(c, step), snsv1alpha1.PhaseRunning, msg, now)
		summarize(c, now)
		if perr := pt.Patch(ctx, c); perr != nil {
			ctrl.LoggerFrom(ctx).V(1).Info("recording a batch Job's retry on a member failed", "member", c.Name, "error", perr.Error())
		}
	}
}

// failMembers fails the step of every member but skip, when err is a
// refusal for good of their batch Job.
func (r *FriendDeletionReconciler) failMembers(ctx context.Context, members []*snsv1alpha1.FriendDeletion, skip *snsv1alpha1.FriendDeletion, step string, err error) error {
	if err == nil || !isPermanent(err) {
		return nil
	}
	for _, m := range members {
		if m == skip {
			continue
		}
		m = m.DeepCopy() // perhaps the cache's own object
		pt := r.memberPatcher(m)
		if mst := stepstatus.Find(m, step); mst != nil && mst.Phase == snsv1alpha1.PhaseRunning {
			stepstatus.Mark(m, mst, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, fmt.Sprintf("Refused for good, not retried: %v", err), r.now())
			summarize(m, r.now())
			if perr := pt.Patch(ctx, m); perr != nil && !apierrors.IsConflict(perr) && !apierrors.IsNotFound(perr) {
				return fmt.Errorf("failing the step of %s: %w", m.Name, perr)
			}
		}
	}
	return nil
}

// memberPatcher is a status patcher for a batch member other than the
// FriendDeletion being reconciled; its writes wake nothing either.
func (r *FriendDeletionReconciler) memberPatcher(m *snsv1alpha1.FriendDeletion) *statusPatcher {
	pt := newStatusPatcher(r.Client, m)
	pt.onWrite = func(before, after *snsv1alpha1.FriendDeletion) { r.emit(after, before, after) }
	pt.writes = r.ownWrites()
	return pt
}

// recordMembership writes the member's step Running with the batch Job's
// name (with its step list, when not stored yet), under an optimistic lock.
// fd, the FriendDeletion being reconciled, is written through its own
// patcher p. It reports false when the write lost a race with a newer
// status: the member is then left out of the batch.
func (r *FriendDeletionReconciler) recordMembership(ctx context.Context, p *statusPatcher, fd, m *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, step, name string) (bool, error) {
	if m == fd {
		ok, err := r.recordJobIntent(ctx, p, fd, stepstatus.Find(fd, step), name)
		if isPermanent(err) {
			// Written with the reconcile's status write.
			r.membershipRefused(fd, stepstatus.Find(fd, step), err)
			return false, nil
		}
		return ok, err
	}
	pt := r.memberPatcher(m)
	if !r.fixSteps(m, cfg) {
		return false, nil
	}
	st := stepstatus.Find(m, step)
	if st == nil || st.Phase != snsv1alpha1.PhasePending {
		return false, nil
	}
	st.JobName = name
	stepstatus.Mark(m, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(name), r.now())
	summarize(m, r.now())
	switch err := pt.Patch(ctx, m); {
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return false, nil
	case isPermanent(err):
		r.membershipRefused(m, st, fmt.Errorf("recording batch Job %s in the status of %s: %w", name, m.Name, err))
		if err := pt.Patch(ctx, m); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("failing the step of %s, whose membership of batch Job %s was refused: %w", m.Name, name, err)
		}
		return false, nil
	case err != nil:
		return false, fmt.Errorf("recording batch Job %s in the status of %s: %w", name, m.Name, err)
	}
	return true, nil
}

// membershipRefused fails the step of a member whose membership write the
// API server refused for good (an admission policy, say): the same write
// would be refused at every plan, and the member never joined the batch
// (no Job name is kept).
func (r *FriendDeletionReconciler) membershipRefused(m *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, err error) {
	st.JobName = ""
	stepstatus.Mark(m, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, fmt.Sprintf("Refused for good, not retried: %v", err), r.now())
	summarize(m, r.now())
}

// batchCandidates are the FriendDeletions ready for the config's step, fd
// first (as this reconcile has it: its step list may not be stored yet),
// then those the indexBatchCandidate index finds, less those written into
// a batch that the cache does not show yet. The others are the cache's own
// objects, not copies: copy one before changing it. For the config's first step,
// FriendDeletions whose steps are not fixed yet are candidates too; their
// steps are fixed from the config when they join.
func (r *FriendDeletionReconciler) batchCandidates(ctx context.Context, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, step string) ([]*snsv1alpha1.FriendDeletion, error) {
	keys := []string{fd.Spec.ConfigName + "/" + step}
	// Deletions not yet seen may join at the first step, their steps
	// fixed as they join; not when the config verifies pairs, as each
	// deletion is verified in its own reconcile before it may join.
	if len(cfg.Spec.Cleanup) > 0 && cfg.Spec.Cleanup[0].Name == step && cfg.Spec.Verify == nil {
		keys = append(keys, fd.Spec.ConfigName+"/")
	}
	out := []*snsv1alpha1.FriendDeletion{fd}
	bs := r.batchState()
	for _, k := range keys {
		var list snsv1alpha1.FriendDeletionList
		// Read only: those that join are copied first (writeMembers).
		if err := r.List(ctx, &list, client.InNamespace(fd.Namespace), client.MatchingFields{indexBatchCandidate: k}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing the candidates of a batch: %w", err)
		}
		for i := range list.Items {
			c := &list.Items[i]
			if c.Name == fd.Name || !stepsMayStart(c) {
				continue
			}
			if _, ok := bs.joinedTo(client.ObjectKeyFromObject(c)); ok {
				continue
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// recreateBatchJob creates the batch Job a member's status records but
// that does not exist (a manager stopped between recording the members
// and creating it, or a create that failed and is retried): for the
// members the indexRunningJob index finds with that name recorded, and
// those this manager wrote and the cache may not show yet.
func (r *FriendDeletionReconciler) recreateBatchJob(ctx context.Context, fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, tmpl *batchv1.JobTemplateSpec, name string) (ctrl.Result, error) {
	unlock := r.batchState().lock(fd.Namespace, fd.Spec.ConfigName, st.Name)
	defer unlock()
	// Another worker may have created it while this one waited.
	if job, err := r.getJob(ctx, fd.Namespace, name, true); err != nil || job != nil {
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, err
	}
	members, err := r.batchMembers(ctx, fd, st.Name, name)
	if err != nil {
		return ctrl.Result{}, err
	}
	ctrl.LoggerFrom(ctx).Info("creating the batch Job its members recorded", "job", name, "members", len(members))
	return r.finishBatchCreate(ctx, fd, st, tmpl, name, members)
}

// batchMembers are the FriendDeletions whose step records the Job name
// while Running: fd, those the indexRunningJob index finds, and those this
// manager wrote into the batch.
func (r *FriendDeletionReconciler) batchMembers(ctx context.Context, fd *snsv1alpha1.FriendDeletion, step, name string) ([]*snsv1alpha1.FriendDeletion, error) {
	var list snsv1alpha1.FriendDeletionList
	// Read only (createBatchJob); failMembers copies before it changes.
	if err := r.List(ctx, &list, client.InNamespace(fd.Namespace), client.MatchingFields{indexRunningJob: name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the members of batch Job %s: %w", name, err)
	}
	seen := map[string]bool{fd.Name: true}
	members := []*snsv1alpha1.FriendDeletion{fd}
	for i := range list.Items {
		m := &list.Items[i]
		if !seen[m.Name] && recordsJob(m, step, name) {
			seen[m.Name] = true
			members = append(members, m)
		}
	}
	bs := r.batchState()
	bs.mu.Lock()
	written := slices.Clone(bs.members[fd.Namespace+"/"+name])
	bs.mu.Unlock()
	for _, n := range written {
		if seen[n] {
			continue
		}
		m := &snsv1alpha1.FriendDeletion{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: fd.Namespace, Name: n}, m)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading batch member %s: %w", n, err)
		}
		if recordsJob(m, step, name) {
			seen[n] = true
			members = append(members, m)
		}
	}
	return members, nil
}

// recordsJob reports whether the FriendDeletion's step is Running with
// that Job's name.
func recordsJob(fd *snsv1alpha1.FriendDeletion, step, job string) bool {
	st := stepstatus.Find(fd, step)
	return st != nil && st.Phase == snsv1alpha1.PhaseRunning && st.JobName == job
}

// createBatchJob creates the batch Job for the members, after its pairs
// ConfigMap when the pairs file is too large to inline, and reports whether
// it created the Job.
func (r *FriendDeletionReconciler) createBatchJob(ctx context.Context, ns, step string, tmpl *batchv1.JobTemplateSpec, name string, members []*snsv1alpha1.FriendDeletion) (bool, error) {
	if len(members) == 0 {
		return false, nil
	}
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b *snsv1alpha1.FriendDeletion) int { return strings.Compare(a.Name, b.Name) })
	pairs, err := batchPairsFile(members)
	if err != nil {
		return false, err
	}
	owners := batchOwners(members)
	labels := batchLabels(members, name, step)
	if !inlinePairs(pairs) {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: batchConfigMapName(name), Namespace: ns, Labels: labels, OwnerReferences: owners,
			},
			Immutable: ptr.To(true),
			Data:      map[string]string{PairsKey: string(pairs)},
		}
		if err := r.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return false, fmt.Errorf("creating ConfigMap %s: %w", cm.Name, err)
		}
	}
	jobLabels := merge(labels, nil)
	for _, m := range members {
		jobLabels[memberLabelKey(m.Name)] = ""
	}
	job := buildJobFrom(tmpl, jobInput{
		namespace: ns, name: name,
		labels: jobLabels, podLabels: labels,
		env: batchEnv(members), pairs: pairs, configMap: batchConfigMapName(name),
		owners: owners,
	})
	err = r.Create(ctx, job)
	if err == nil || apierrors.IsAlreadyExists(err) || isPermanent(err) {
		bs := r.batchState()
		bs.mu.Lock()
		delete(bs.members, ns+"/"+name)
		bs.mu.Unlock()
	}
	switch {
	case apierrors.IsAlreadyExists(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("creating Job %s: %w", name, err)
	}
	return true, nil
}

// batchConfigMapName is the name of a batch Job's pairs ConfigMap.
func batchConfigMapName(job string) string { return childName(job, "pairs") }

// batchOwners are the owner references of a batch Job and its ConfigMap:
// every member, none of them the controller, so that the garbage collector
// deletes them only once every member is gone (a member deleted by its
// retention does not take a running Job with it).
func batchOwners(members []*snsv1alpha1.FriendDeletion) []metav1.OwnerReference {
	out := make([]metav1.OwnerReference, 0, len(members))
	for _, m := range members {
		out = append(out, metav1.OwnerReference{
			APIVersion: snsv1alpha1.GroupVersion.String(), Kind: "FriendDeletion", Name: m.Name, UID: m.UID,
		})
	}
	return out
}

// batchLabels are the labels of a batch Job's pods and ConfigMap (and,
// with one label per member, of the Job): the first member's name in
// LabelFriendDeletion (the Job is named after it), the step, config and
// SDKAppID, and LabelBatch with the number of members.
func batchLabels(members []*snsv1alpha1.FriendDeletion, job, step string) map[string]string {
	first := members[0]
	for _, m := range members {
		if jobName(m.Name, step) == job {
			first = m
		}
	}
	l := childLabels(first, step)
	l[LabelBatch] = strconv.Itoa(len(members))
	return l
}

// memberLabelKey is the key of the label that marks a batch Job as serving
// the named FriendDeletion: MemberLabelPrefix and the name, or, for a name
// longer than a label name may be, its first 54 characters and a hash.
func memberLabelKey(name string) string {
	if len(name) <= 63 {
		return MemberLabelPrefix + name
	}
	sum := sha256.Sum256([]byte(name))
	return MemberLabelPrefix + strings.TrimRight(name[:54], "-.") + "-" + hex.EncodeToString(sum[:4])
}

// batchEnv is the environment of the batch Job contract.
func batchEnv(members []*snsv1alpha1.FriendDeletion) []corev1.EnvVar {
	pairs := 0
	for _, m := range members {
		pairs += len(stepPairs(m))
	}
	return []corev1.EnvVar{
		{Name: EnvFriendDeletionNamespace, Value: members[0].Namespace},
		{Name: EnvSDKAppID, Value: members[0].Spec.SDKAppID},
		{Name: EnvFriendDeletionCount, Value: strconv.Itoa(len(members))},
		{Name: EnvPairCount, Value: strconv.Itoa(pairs)},
		{Name: EnvPairsFile, Value: PairsFile},
	}
}

// batchFile is the batch Job's pairs file.
type batchFile struct {
	Deletions []string    `json:"deletions"`
	Pairs     []batchPair `json:"pairs"`
}

type batchPair struct {
	FriendDeletion string `json:"frienddeletion"`
	From           string `json:"from"`
	To             string `json:"to"`
}

// batchPairsFile is a batch Job's pairs file: the members' names, and
// every member's pairs (stepPairs), each with its member's name, members
// in the order given, with <, > and & written as themselves. A file larger
// than a ConfigMap can hold is a permanent error.
func batchPairsFile(members []*snsv1alpha1.FriendDeletion) ([]byte, error) {
	f := batchFile{Deletions: make([]string, 0, len(members))}
	for _, m := range members {
		f.Deletions = append(f.Deletions, m.Name)
		for _, p := range stepPairs(m) {
			f.Pairs = append(f.Pairs, batchPair{FriendDeletion: m.Name, From: p.From, To: p.To})
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("encoding pairs: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxPairsFile {
		return nil, permanent(fmt.Errorf("the pairs file is %d bytes, more than the %d a ConfigMap can hold", len(b), MaxPairsFile))
	}
	return b, nil
}

// batchFileBytes is what a FriendDeletion adds to a batch pairs file: its
// name in deletions, and each pair with its name, commas included.
func batchFileBytes(fd *snsv1alpha1.FriendDeletion) int {
	name := jsonStringLen(fd.Name)
	n := name + 1
	for _, p := range stepPairs(fd) {
		n += len(`{"frienddeletion":,"from":,"to":},`) + name + jsonStringLen(p.From) + jsonStringLen(p.To)
	}
	return n
}

// jsonStringLen is the length of s as a JSON string, quotes included, as
// encoding/json writes it without HTML escaping.
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// batchJobDone reports, for a finished batch Job whose outcome fd's stored
// status records, whether every other member has recorded it too (or is
// gone), so that the Job may be deleted: whether the indexRunningJob index
// finds no other owner of the Job still Running it. Nothing is copied:
// this runs once per member and batch, and a batch has up to 1000.
func (r *FriendDeletionReconciler) batchJobDone(ctx context.Context, fd *snsv1alpha1.FriendDeletion, job *batchv1.Job) bool {
	var list snsv1alpha1.FriendDeletionList
	if err := r.List(ctx, &list, client.InNamespace(job.Namespace), client.MatchingFields{indexRunningJob: job.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return false
	}
	var owners map[types.UID]bool
	for i := range list.Items {
		m := &list.Items[i]
		if m.UID == fd.UID || !m.DeletionTimestamp.IsZero() {
			continue
		}
		if owners == nil {
			owners = make(map[types.UID]bool, len(job.OwnerReferences))
			for _, ref := range job.OwnerReferences {
				owners[ref.UID] = true
			}
		}
		if owners[m.UID] {
			return false
		}
	}
	return true
}

// servesJob reports whether the Job serves the FriendDeletion: its own Job
// (controller reference) or a batch Job it is a member (an owner) of.
func servesJob(job *batchv1.Job, fd *snsv1alpha1.FriendDeletion) bool {
	for _, ref := range job.OwnerReferences {
		if ref.UID == fd.UID {
			return true
		}
	}
	return false
}

// isBatchJob reports whether the Job is a batch Job.
func isBatchJob(job *batchv1.Job) bool {
	_, ok := job.Labels[LabelBatch]
	return ok
}
