package webhook

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Replay pacing.
const (
	// replayBatch is how many of the oldest entries are created at once.
	replayBatch = 16
	// replayTimeout bounds one create.
	replayTimeout = 10 * time.Second
	// replayIdle is how often an empty spool is looked at, besides being
	// woken by a put; it also refreshes the age metric.
	replayIdle = time.Second
	// Backoff after a failed replay: from the first to the last, doubling.
	replayBackoffFirst = 200 * time.Millisecond
	replayBackoffMax   = 10 * time.Second
)

// replayer is the manager Runnable that stores spooled FriendDeletions
// through the API server, oldest first, and removes them from the spool. It
// runs on every replica, leader or not: each replica has its own spool. It
// starts with whatever the spool holds from before a restart.
//
// On shutdown it waits for the server to answer its last callbacks, tries
// for at most drainTimeout to empty the spool, and closes it.
type replayer struct {
	spool   *spool
	client  client.Writer
	metrics *metrics
	log     logr.Logger
	// serverDone is closed once the server has answered its last callback.
	serverDone   <-chan struct{}
	drainTimeout time.Duration
	// done is closed once the spool is closed.
	done chan struct{}
}

// NeedLeaderElection is false: every replica replays its own spool.
func (p *replayer) NeedLeaderElection() bool { return false }

// Start replays until ctx ends, then drains and closes the spool.
func (p *replayer) Start(ctx context.Context) error {
	defer close(p.done)
	defer func() {
		if err := p.spool.close(); err != nil {
			p.log.Error(err, "closing the spool")
		}
	}()
	if st := p.spool.snapshot(); st.entries > 0 {
		p.log.Info("replaying the spool", "entries", st.entries, "oldest", st.oldest)
	}
	backoff := replayBackoffFirst
	for {
		n, err := p.replayOnce(ctx)
		p.observe()
		var wait <-chan time.Time
		switch {
		case err != nil:
			wait = time.After(backoff)
			backoff = min(2*backoff, replayBackoffMax)
		case n > 0:
			backoff = replayBackoffFirst
			continue
		default:
			backoff = replayBackoffFirst
			wait = time.After(replayIdle)
		}
		select {
		case <-ctx.Done():
			p.drain()
			return nil
		case <-p.spool.notify:
		case <-wait:
		}
	}
}

// drain waits for the server's last callbacks, then replays until the spool
// is empty, a replay fails, or drainTimeout passes.
func (p *replayer) drain() {
	if p.serverDone != nil {
		select {
		case <-p.serverDone:
		case <-time.After(time.Minute):
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.drainTimeout)
	defer cancel()
	for ctx.Err() == nil {
		n, err := p.replayOnce(ctx)
		if err != nil || n == 0 {
			break
		}
	}
	p.observe()
	if st := p.spool.snapshot(); st.entries > 0 {
		p.log.Info("stopping with callbacks in the spool: they are replayed when a receiver starts with this spool again", "entries", st.entries, "oldest", st.oldest)
	}
}

// replayOnce creates up to replayBatch of the oldest entries and removes
// those now stored. It returns how many it removed, and an error when one
// failed for a reason that may pass, after which the caller backs off.
func (p *replayer) replayOnce(ctx context.Context) (int, error) {
	batch, err := p.spool.oldestEntries(replayBatch)
	if err != nil {
		p.metrics.replayFailures.WithLabelValues(replaySpool).Inc()
		p.log.Error(err, "reading the spool")
		return 0, err
	}
	if len(batch) == 0 {
		return 0, nil
	}
	outcomes := make([]error, len(batch))
	var wg sync.WaitGroup
	for i := range batch {
		wg.Go(func() { outcomes[i] = p.create(ctx, batch[i]) })
	}
	wg.Wait()

	var stored, rejected []spooled
	var firstErr error
	for i, e := range batch {
		switch err := outcomes[i]; {
		case err == nil:
			stored = append(stored, e)
		case e.entry.Object == nil || refusedForGood(err):
			rejected = append(rejected, e)
			p.metrics.replayFailures.WithLabelValues(replayRejected).Inc()
			kv := []any{"error", err.Error()}
			if o := e.entry.Object; o != nil {
				kv = append(kv, "namespace", o.Namespace, "frienddeletion", o.Name)
			}
			p.log.Error(nil, "spooled callback refused for good: kept aside in the spool's rejected bucket", kv...)
		default:
			p.metrics.replayFailures.WithLabelValues(replayTransient).Inc()
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if err := p.spool.remove(stored, false); err != nil {
		p.metrics.replayFailures.WithLabelValues(replaySpool).Inc()
		p.log.Error(err, "removing replayed entries from the spool")
		return 0, err
	}
	if err := p.spool.remove(rejected, true); err != nil {
		p.metrics.replayFailures.WithLabelValues(replaySpool).Inc()
		p.log.Error(err, "setting refused entries aside in the spool")
		return 0, err
	}
	p.metrics.replays.Add(float64(len(stored)))
	if len(stored) > 0 {
		p.log.V(1).Info("replayed spooled callbacks", "stored", len(stored))
	}
	if firstErr != nil {
		p.log.Info("replaying the spool failed; retrying", "error", firstErr.Error(), "waiting", p.spool.snapshot().entries)
	}
	return len(stored) + len(rejected), firstErr
}

// refusedForGood reports whether a replayed create that failed with err can
// never succeed, so that its entry is set aside instead of retried: the
// object is invalid, too large to store, or its namespace is gone. Every
// other error is retried with backoff, 401, 403 and a 404 of the resource
// included: an API server that is starting, or warming its caches after an
// upgrade, answers those for a while before it takes the same object.
func refusedForGood(err error) bool {
	switch {
	case errors.Is(err, errUndecodable), apierrors.IsInvalid(err), tooLarge(err):
		return true
	case apierrors.IsNotFound(err):
		var status apierrors.APIStatus
		if !errors.As(err, &status) {
			return false
		}
		d := status.Status().Details
		return d != nil && d.Kind == "namespaces"
	}
	return false
}

// create stores one entry's object; one already there (a store that the
// receiver thought had failed, or an earlier replay) counts as stored. An
// entry that cannot be decoded returns errUndecodable.
func (p *replayer) create(ctx context.Context, e spooled) error {
	if e.entry.Object == nil {
		return errUndecodable
	}
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	err := p.client.Create(ctx, e.entry.Object.DeepCopy())
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// observe sets the spool's gauges.
func (p *replayer) observe() {
	st := p.spool.snapshot()
	p.metrics.spoolEntries.Set(float64(st.entries))
	p.metrics.spoolBytes.Set(float64(st.bytes))
	p.metrics.spoolRejected.Set(float64(st.rejected))
	age := 0.0
	if !st.oldest.IsZero() {
		age = max(0, time.Since(st.oldest).Seconds())
	}
	p.metrics.spoolOldestAge.Set(age)
}
