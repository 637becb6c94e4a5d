package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// tokenSecretPollInterval is how long the receiver trusts what it last read
// of a token Secret's metadata: a rotated token applies within it.
const tokenSecretPollInterval = 5 * time.Second

// tokenSecretReadTimeout bounds one metadata read, so that an API server
// that does not answer costs a callback little of its budget.
const tokenSecretReadTimeout = 250 * time.Millisecond

// polledSecretMetadata tells tokenSecrets whether a token Secret changed
// without watching Secrets. Watching Secrets, even their metadata only,
// needs list and watch on Secrets, which RBAC cannot tell apart from
// reading every Secret's data; this needs get alone, and asks only for the
// Secrets the CallbackConfigs name. It reads a Secret's metadata from the
// API server at most once per interval and answers from that read in
// between (a missing or forbidden Secret included), so a steady stream of
// callbacks costs one small read per Secret per interval, plus one whole
// read when its resourceVersion changed.
type polledSecretMetadata struct {
	// direct reads from the API server.
	direct   client.Reader
	interval time.Duration
	clock    clock.PassiveClock

	mu   sync.Mutex
	seen map[types.NamespacedName]polledMetadata
	// reads makes concurrent reads of one Secret one API request.
	reads singleflight.Group
}

// polledMetadata is one read: the Secret's metadata, or the NotFound or
// Forbidden error the API server answered (see unreadable).
type polledMetadata struct {
	meta    *metav1.PartialObjectMetadata
	missing error
	at      time.Time
}

func newPolledSecretMetadata(direct client.Reader, interval time.Duration, clk clock.PassiveClock) *polledSecretMetadata {
	return &polledSecretMetadata{direct: direct, interval: interval, clock: clk, seen: map[types.NamespacedName]polledMetadata{}}
}

// Get fills obj, a Secret's PartialObjectMetadata, from a read no older
// than the interval. When a read fails for another reason than NotFound or
// Forbidden (the API server is down, throttles or does not answer in
// time), the last answer stands for another interval: the token is the one
// last seen, and callbacks signed with it go on being checked, and spooled,
// through the outage. With no answer yet, the error is returned.
func (p *polledSecretMetadata) Get(ctx context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	into, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return fmt.Errorf("polled Secret metadata: cannot read a %T", obj)
	}
	p.mu.Lock()
	last, ok := p.seen[key]
	p.mu.Unlock()
	if !ok || p.clock.Since(last.at) >= p.interval {
		had := ok
		v, err, _ := p.reads.Do(key.String(), func() (any, error) {
			read := polledMetadata{meta: secretMetadata(), at: p.clock.Now()}
			readCtx, cancel := context.WithTimeout(ctx, tokenSecretReadTimeout)
			defer cancel()
			err := p.direct.Get(readCtx, key, read.meta)
			switch {
			case unreadable(err):
				read.meta, read.missing = nil, err
			case err != nil && had:
				// Keep the last answer, and ask again an interval later.
				read.meta, read.missing = last.meta, last.missing
			case err != nil:
				return nil, err
			}
			p.mu.Lock()
			p.seen[key] = read
			p.mu.Unlock()
			return read, nil
		})
		if err != nil {
			return err
		}
		last = v.(polledMetadata)
	}
	if last.missing != nil {
		return last.missing
	}
	last.meta.DeepCopyInto(into)
	return nil
}

// List is not supported: the receiver never lists Secrets.
func (p *polledSecretMetadata) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("polled Secret metadata: listing Secrets is not supported")
}
