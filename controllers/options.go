package controllers

import (
	"flag"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Options configures the reconcilers. Build one with DefaultOptions, let
// BindFlags override it from the command line, and pass it to
// SetupWithManager.
type Options struct {
	// FriendDeletionConcurrency is how many FriendDeletions are reconciled at
	// once.
	FriendDeletionConcurrency int
	// CallbackConfigConcurrency is how many CallbackConfigs are reconciled at
	// once.
	CallbackConfigConcurrency int

	// RetryBaseDelay and RetryMaxDelay bound the per-object exponential
	// backoff after a reconcile error.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// RetryQPS and RetryBurst bound how fast objects that failed are retried,
	// across all objects.
	RetryQPS   float64
	RetryBurst int

	// HTTPBackoffBase is the wait before the second attempt of an http step;
	// each later attempt waits twice as long, up to HTTPBackoffMax, with up
	// to HTTPBackoffJitter (a fraction) added at random.
	HTTPBackoffBase   time.Duration
	HTTPBackoffMax    time.Duration
	HTTPBackoffJitter float64
	// HTTPRetryAfterMax caps the wait a Retry-After answer asks for.
	HTTPRetryAfterMax time.Duration
	// HTTPConcurrencyPerConfig bounds the http step requests in flight at
	// once for the FriendDeletions of one CallbackConfig. Requests are sent
	// off the reconcile workers; this bounds what one slow endpoint holds.
	HTTPConcurrencyPerConfig int
	// HTTPMaxIdleConnsPerHost bounds idle keep-alive connections per host of
	// the http step client.
	HTTPMaxIdleConnsPerHost int

	// VerifyBackoffBase is the wait after a failed verification attempt
	// (a REST failure, an ErrorCode, a pair's ResultCode); each later one
	// waits twice as long, up to VerifyBackoffMax.
	VerifyBackoffBase time.Duration
	VerifyBackoffMax  time.Duration
	// VerifyTimeout bounds each IM REST call.
	VerifyTimeout time.Duration
	// VerifyMaxWait is the longest a reconcile waits for its turn under a
	// config's verify.requestsPerSecond; a longer wait requeues instead.
	VerifyMaxWait time.Duration

	// ReceiverServiceAccount, "<namespace>/<name>", is the callback
	// receiver's ServiceAccount when it runs apart (--role=receiver): for
	// each CallbackConfig the controllers grant it get on the token Secret
	// the config names, and no other (see receiver_access.go). Empty grants
	// nothing: the receiver runs with the controllers' identity (--role=all).
	ReceiverServiceAccount string

	// Clock tells the time to the reconcilers: step start and completion
	// times, http retry times, external step deadlines and retention. Tests
	// replace it; it defaults to the real clock.
	Clock clock.PassiveClock
}

// DefaultOptions returns the options the operator runs with unless flags
// say otherwise.
func DefaultOptions() Options {
	return Options{
		FriendDeletionConcurrency: 32,
		CallbackConfigConcurrency: 2,
		RetryBaseDelay:            50 * time.Millisecond,
		RetryMaxDelay:             5 * time.Minute,
		RetryQPS:                  50,
		RetryBurst:                500,
		HTTPBackoffBase:           5 * time.Second,
		HTTPBackoffMax:            5 * time.Minute,
		HTTPBackoffJitter:         0.2,
		HTTPRetryAfterMax:         30 * time.Minute,
		HTTPConcurrencyPerConfig:  8,
		HTTPMaxIdleConnsPerHost:   16,
		VerifyBackoffBase:         5 * time.Second,
		VerifyBackoffMax:          5 * time.Minute,
		VerifyTimeout:             10 * time.Second,
		VerifyMaxWait:             time.Second,
		Clock:                     clock.RealClock{},
	}
}

// BindFlags registers a flag for each option, with the option's current
// value as the default.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.FriendDeletionConcurrency, "frienddeletion-concurrency", o.FriendDeletionConcurrency,
		"How many FriendDeletions are reconciled at once.")
	fs.IntVar(&o.CallbackConfigConcurrency, "callbackconfig-concurrency", o.CallbackConfigConcurrency,
		"How many CallbackConfigs are reconciled at once.")
	fs.DurationVar(&o.RetryBaseDelay, "retry-base-delay", o.RetryBaseDelay,
		"First wait before an object whose reconcile failed is reconciled again; it doubles on each failure.")
	fs.DurationVar(&o.RetryMaxDelay, "retry-max-delay", o.RetryMaxDelay,
		"Longest wait before an object whose reconcile failed is reconciled again.")
	fs.Float64Var(&o.RetryQPS, "retry-qps", o.RetryQPS,
		"How many failed reconciles per second are retried, across all objects.")
	fs.IntVar(&o.RetryBurst, "retry-burst", o.RetryBurst,
		"Burst allowed above --retry-qps.")
	fs.DurationVar(&o.HTTPBackoffBase, "http-step-backoff-base", o.HTTPBackoffBase,
		"Wait before the second attempt of an http cleanup step; it doubles on each later attempt.")
	fs.DurationVar(&o.HTTPBackoffMax, "http-step-backoff-max", o.HTTPBackoffMax,
		"Longest wait between two attempts of an http cleanup step.")
	fs.Float64Var(&o.HTTPBackoffJitter, "http-step-backoff-jitter", o.HTTPBackoffJitter,
		"Random fraction added to each wait between http cleanup step attempts (0.2 adds up to 20%).")
	fs.DurationVar(&o.HTTPRetryAfterMax, "http-step-retry-after-max", o.HTTPRetryAfterMax,
		"Longest wait before the next attempt of an http cleanup step that a Retry-After answer can ask for.")
	fs.IntVar(&o.HTTPConcurrencyPerConfig, "http-step-concurrency-per-config", o.HTTPConcurrencyPerConfig,
		"How many http cleanup step requests are in flight at once per CallbackConfig; they are sent off the reconcile workers.")
	fs.IntVar(&o.HTTPMaxIdleConnsPerHost, "http-step-max-idle-conns-per-host", o.HTTPMaxIdleConnsPerHost,
		"Idle keep-alive connections kept per host by the http cleanup step client.")
	fs.DurationVar(&o.VerifyBackoffBase, "verify-backoff-base", o.VerifyBackoffBase,
		"Wait after a failed verification of a FriendDeletion's pairs with the IM backend; it doubles on each later failure.")
	fs.DurationVar(&o.VerifyBackoffMax, "verify-backoff-max", o.VerifyBackoffMax,
		"Longest wait between two verification attempts.")
	fs.DurationVar(&o.VerifyTimeout, "verify-timeout", o.VerifyTimeout,
		"Timeout of each IM REST call (v4/sns/friend_check) that verifies pairs.")
	fs.DurationVar(&o.VerifyMaxWait, "verify-max-wait", o.VerifyMaxWait,
		"Longest a reconcile waits for its turn under a config's verify.requestsPerSecond before it requeues.")
	fs.StringVar(&o.ReceiverServiceAccount, "receiver-service-account", o.ReceiverServiceAccount,
		"The callback receiver's ServiceAccount, <namespace>/<name>, when it runs apart (--role=receiver): for each CallbackConfig, "+
			"a Role and RoleBinding owned by the config let it get the token Secret the config names and no other. Empty grants nothing.")
}

// rateLimiter is the per-object backoff after reconcile errors, combined
// with an overall bucket.
func (o Options) rateLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](o.RetryBaseDelay, o.RetryMaxDelay),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(o.RetryQPS), o.RetryBurst)},
	)
}

// withDefaults fills in what a caller left at its zero value.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.FriendDeletionConcurrency <= 0 {
		o.FriendDeletionConcurrency = d.FriendDeletionConcurrency
	}
	if o.CallbackConfigConcurrency <= 0 {
		o.CallbackConfigConcurrency = d.CallbackConfigConcurrency
	}
	if o.RetryBaseDelay <= 0 {
		o.RetryBaseDelay = d.RetryBaseDelay
	}
	if o.RetryMaxDelay <= 0 {
		o.RetryMaxDelay = d.RetryMaxDelay
	}
	if o.RetryQPS <= 0 {
		o.RetryQPS = d.RetryQPS
	}
	if o.RetryBurst <= 0 {
		o.RetryBurst = d.RetryBurst
	}
	if o.HTTPBackoffBase <= 0 {
		o.HTTPBackoffBase = d.HTTPBackoffBase
	}
	if o.HTTPBackoffMax <= 0 {
		o.HTTPBackoffMax = d.HTTPBackoffMax
	}
	if o.HTTPBackoffJitter < 0 {
		o.HTTPBackoffJitter = 0
	}
	if o.HTTPRetryAfterMax <= 0 {
		o.HTTPRetryAfterMax = d.HTTPRetryAfterMax
	}
	if o.HTTPConcurrencyPerConfig <= 0 {
		o.HTTPConcurrencyPerConfig = d.HTTPConcurrencyPerConfig
	}
	if o.HTTPMaxIdleConnsPerHost <= 0 {
		o.HTTPMaxIdleConnsPerHost = d.HTTPMaxIdleConnsPerHost
	}
	if o.VerifyBackoffBase <= 0 {
		o.VerifyBackoffBase = d.VerifyBackoffBase
	}
	if o.VerifyBackoffMax <= 0 {
		o.VerifyBackoffMax = d.VerifyBackoffMax
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = d.VerifyTimeout
	}
	if o.VerifyMaxWait <= 0 {
		o.VerifyMaxWait = d.VerifyMaxWait
	}
	if o.Clock == nil {
		o.Clock = d.Clock
	}
	return o
}
