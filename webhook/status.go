package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// tally is what one replica counted for one CallbackConfig since its last
// status write.
type tally struct {
	accepted, rejected int64
	last               time.Time
}

// counters gathers callback counts per CallbackConfig between status writes.
type counters struct {
	mu      sync.Mutex
	pending map[types.NamespacedName]tally
}

func newCounters() *counters {
	return &counters{pending: map[types.NamespacedName]tally{}}
}

// record counts one answered callback.
func (c *counters) record(key types.NamespacedName, accepted bool, at time.Time) {
	c.mu.Lock()
	t := c.pending[key]
	if accepted {
		t.accepted++
	} else {
		t.rejected++
	}
	if at.After(t.last) {
		t.last = at
	}
	c.pending[key] = t
	c.mu.Unlock()
}

// take removes and returns everything counted so far.
func (c *counters) take() map[types.NamespacedName]tally {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.pending
	c.pending = make(map[types.NamespacedName]tally, len(out))
	return out
}

// giveBack returns a tally that could not be written, to go with the next.
func (c *counters) giveBack(key types.NamespacedName, t tally) {
	c.mu.Lock()
	cur := c.pending[key]
	cur.accepted += t.accepted
	cur.rejected += t.rejected
	if t.last.After(cur.last) {
		cur.last = t.last
	}
	c.pending[key] = cur
	c.mu.Unlock()
}

// conflictBackoff spreads the retries of replicas writing the same status.
var conflictBackoff = wait.Backoff{Steps: 6, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.5}

// statusFlusher adds the counted callbacks to each CallbackConfig's
// status.acceptedCallbacks and status.rejectedCallbacks and moves
// status.lastCallbackTime forward, once per interval per config. Every
// replica runs one and adds only its own counts, so each write is a
// read-modify-write guarded by resourceVersion and retried on conflict. It
// touches no other status field.
type statusFlusher struct {
	counters *counters
	cached   client.Reader // first read: the manager's cache
	direct   client.Reader // reads after a conflict: the API server
	writer   client.StatusClient
	interval time.Duration
	metrics  *metrics
	log      logr.Logger
	// drained, when set, is closed once no more callbacks will be counted;
	// the last flush waits for it.
	drained <-chan struct{}
	// spool, when set, is this replica's spool: while callbacks of a config
	// wait in it, the config carries the condition
	// spool.sns.imcallback.io/<replica>, removed once none waits.
	spool   *spool
	replica string
	now     func() time.Time
}

// NeedLeaderElection is false: every replica writes its own counts.
func (f *statusFlusher) NeedLeaderElection() bool { return false }

// Start writes the counts every interval until ctx ends, then once more.
func (f *statusFlusher) Start(ctx context.Context) error {
	ticker := time.NewTicker(f.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			f.flush(ctx)
		case <-ctx.Done():
			if f.drained != nil {
				select {
				case <-f.drained:
				case <-time.After(30 * time.Second):
				}
			}
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			f.flush(final)
			cancel()
			return nil
		}
	}
}

// flush writes every pending tally, and the spool condition of every config
// whose condition does not match the spool; tallies that fail are kept for
// next time, and conditions are compared again next time.
func (f *statusFlusher) flush(ctx context.Context) {
	tallies := f.counters.take()
	var waiting map[types.NamespacedName]int
	if f.spool != nil {
		waiting = f.spool.snapshot().perConfig
		for _, key := range f.spoolConditionsToSync(ctx, waiting) {
			if _, ok := tallies[key]; !ok {
				tallies[key] = tally{}
			}
		}
	}
	for key, t := range tallies {
		err := f.write(ctx, key, t, waiting[key])
		switch {
		case err == nil:
			f.metrics.statusFlushes.WithLabelValues("ok").Inc()
		case apierrors.IsNotFound(err):
			// The config is gone, and its counts with it.
		default:
			f.metrics.statusFlushes.WithLabelValues("error").Inc()
			f.log.Error(err, "writing callback counters to CallbackConfig status", "namespace", key.Namespace, "config", key.Name)
			f.counters.giveBack(key, t)
		}
	}
}

// write adds one tally to one config's status and, with a spool, sets its
// spool condition from waiting, the number of its callbacks in the spool.
func (f *statusFlusher) write(ctx context.Context, key types.NamespacedName, t tally, waiting int) error {
	reader := f.cached
	return retry.RetryOnConflict(conflictBackoff, func() error {
		cfg := &snsv1alpha1.CallbackConfig{}
		if err := reader.Get(ctx, key, cfg); err != nil {
			return err
		}
		reader = f.direct // the cache lagged if this write conflicts
		base := cfg.DeepCopy()
		changed := false
		if f.spool != nil {
			changed = syncSpoolCondition(&cfg.Status, cfg.Generation, f.replica, waiting, metav1.NewTime(f.now()))
		}
		if t == (tally{}) && !changed {
			return nil
		}
		applyTally(&cfg.Status, t)
		return f.writer.Status().Patch(ctx, cfg, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	})
}

// spoolConditionsToSync returns the configs, as the cache holds them, whose
// spool condition for this replica does not match waiting.
func (f *statusFlusher) spoolConditionsToSync(ctx context.Context, waiting map[types.NamespacedName]int) []types.NamespacedName {
	var list snsv1alpha1.CallbackConfigList
	if err := f.cached.List(ctx, &list); err != nil {
		f.log.Error(err, "listing CallbackConfigs to report the spool")
		return nil
	}
	var out []types.NamespacedName
	now := metav1.NewTime(f.now())
	for i := range list.Items {
		cfg := &list.Items[i]
		key := types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.Name}
		st := cfg.Status.DeepCopy()
		if syncSpoolCondition(st, cfg.Generation, f.replica, waiting[key], now) {
			out = append(out, key)
		}
	}
	return out
}

// syncSpoolCondition makes a status's condition for replica's spool say
// that waiting callbacks wait there: True with reason CallbacksSpooled when
// some do, absent when none does. It reports whether it changed the status.
func syncSpoolCondition(st *snsv1alpha1.CallbackConfigStatus, generation int64, replica string, waiting int, now metav1.Time) bool {
	typ := snsv1alpha1.SpoolConditionType(replica)
	if waiting <= 0 {
		return meta.RemoveStatusCondition(&st.Conditions, typ)
	}
	noun := "callbacks wait"
	if waiting == 1 {
		noun = "callback waits"
	}
	return meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type:               typ,
		Status:             metav1.ConditionTrue,
		ObservedGeneration: generation,
		LastTransitionTime: now,
		Reason:             snsv1alpha1.ReasonCallbacksSpooled,
		Message:            fmt.Sprintf("%d %s in the spool of %s for the API server", waiting, noun, replica),
	})
}

// applyTally adds t to a status: counters add up, lastCallbackTime only
// moves forward.
func applyTally(st *snsv1alpha1.CallbackConfigStatus, t tally) {
	st.AcceptedCallbacks += t.accepted
	st.RejectedCallbacks += t.rejected
	if !t.last.IsZero() {
		last := metav1.NewTime(t.last.UTC().Truncate(time.Second))
		if st.LastCallbackTime == nil || st.LastCallbackTime.Before(&last) {
			st.LastCallbackTime = &last
		}
	}
}
