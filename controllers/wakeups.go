package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
)

// requestAnnotation asks for a reconcile when its value changes.
const requestAnnotation = cleanup.RequestAnnotation

// writeLog remembers, per FriendDeletion, the reconciler's status writes,
// so that their watch events wake nothing. A write's event can arrive
// before the write returns (and its resourceVersion is known), so while a
// write is in flight every event of the object is held back and its
// resourceVersion kept; when the write returns, an event held back that
// was none of the reconciler's writes means someone else wrote too, and the
// writer reconciles again (statusPatcher.missed). A reconcile may write
// twice (the intent before a Job, then the Job created), so every write
// whose event has not been seen yet is kept, in order. One entry per
// FriendDeletion at most, dropped when its last write's event arrives, when
// someone else's does, or when it is deleted.
type writeLog struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*writeEntry
}

type writeEntry struct {
	inFlight int
	own      []string // resourceVersions of our writes, events not yet seen, oldest first
	ownAt    time.Time
	held     []string // resourceVersions of events held back during a write
}

// begin notes a write about to be sent.
func (w *writeLog) begin(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.m[key]
	if e == nil {
		e = &writeEntry{}
		w.m[key] = e
	}
	e.inFlight++
}

// end notes a write returned, with the resourceVersion it left (empty when
// it failed), and reports whether an event held back during it was someone
// else's.
func (w *writeLog) end(key types.NamespacedName, rv string) (missed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.m[key]
	if e == nil {
		return false
	}
	e.inFlight--
	if rv != "" {
		e.own, e.ownAt = append(e.own, rv), time.Now()
	}
	for _, h := range e.held {
		if !e.seen(h) {
			missed = true
		}
	}
	e.held = nil
	if e.inFlight == 0 && len(e.own) == 0 {
		delete(w.m, key)
	}
	return missed
}

// seen removes rv, and every write of ours before it (events come in
// order), from the writes whose events are still to come, and reports
// whether rv was ours.
func (e *writeEntry) seen(rv string) bool {
	for i, o := range e.own {
		if o == rv {
			e.own = e.own[i+1:]
			return true
		}
	}
	return false
}

// consume reports whether an update event that left key at rv comes from
// the reconciler's own write (or arrives while one is in flight), and
// forgets what it no longer needs.
func (w *writeLog) consume(key types.NamespacedName, rv string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.m[key]
	switch {
	case e == nil:
		return false
	case e.inFlight > 0:
		e.held = append(e.held, rv)
		return true
	}
	own := e.seen(rv)
	if !own || len(e.own) == 0 {
		delete(w.m, key)
	}
	return own
}

// maxCacheLag bounds how long a reconcile waits for the cache to show the
// reconciler's own last write (see lagging): if its event never comes as
// such (a relist coalesces it), the cache is read as it is.
const maxCacheLag = 5 * time.Second

// lagging reports whether a reconcile that read key at resourceVersion rv
// from the cache would act on a status older than the reconciler's own
// writes: one in flight, or one returned whose event the cache has not
// shown yet (a Job's event often arrives first). Such a reconcile would
// redo what that write did, and its status patch would be refused as a
// conflict (409), a write wasted on the API server.
func (w *writeLog) lagging(key types.NamespacedName, rv string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.m[key]
	switch {
	case e == nil:
		return false
	case e.inFlight > 0:
		return true
	}
	return len(e.own) > 0 && e.own[len(e.own)-1] != rv && now.Sub(e.ownAt) < maxCacheLag
}

func (w *writeLog) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, key)
}

// jobDeletionLog remembers, per FriendDeletion, the Jobs seen deleted before
// their outcome was recorded. What lasts is the status: a job step records
// its Job created (attempts 1) once the create succeeded, on the first
// member for a batch Job (see jobCreated). This log covers the moment
// between a create and that record reaching the cache, in which a missing
// Job is known to have existed only from its delete event: the step fails
// instead of the Job being created again (deleting a running Job cancels
// its step). Entries go when the FriendDeletion finishes or is deleted.
type jobDeletionLog struct {
	mu   sync.Mutex
	jobs map[types.NamespacedName]map[string]bool
}

func (l *jobDeletionLog) note(fd types.NamespacedName, job string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.jobs[fd] == nil {
		l.jobs[fd] = map[string]bool{}
	}
	l.jobs[fd][job] = true
}

func (l *jobDeletionLog) deleted(fd types.NamespacedName, job string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.jobs[fd][job]
}

func (l *jobDeletionLog) forget(fd types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.jobs, fd)
}

// ownWrites is the reconciler's writeLog, made on first use.
func (r *FriendDeletionReconciler) ownWrites() *writeLog {
	r.logsOnce.Do(r.initLogs)
	return r.writes
}

// jobDeletions is the reconciler's jobDeletionLog, made on first use.
func (r *FriendDeletionReconciler) jobDeletions() *jobDeletionLog {
	r.logsOnce.Do(r.initLogs)
	return r.deletedJobs
}

func (r *FriendDeletionReconciler) initLogs() {
	r.writes = &writeLog{m: map[types.NamespacedName]*writeEntry{}}
	r.deletedJobs = &jobDeletionLog{jobs: map[types.NamespacedName]map[string]bool{}}
}
