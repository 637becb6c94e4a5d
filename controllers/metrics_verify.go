package controllers

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// verifyMetrics count the verification of pairs with the IM backend: the
// friend_check calls by result, and the pairs verified by what the IM
// backend said. A rise of pairs still friends may be forged callbacks.
type verifyMetrics struct {
	calls *prometheus.CounterVec
	pairs *prometheus.CounterVec
}

// Results of a friend_check call, for the calls metric.
const (
	verifyCallOK    = "ok"    // answered (items with a ResultCode included)
	verifyCallError = "error" // no answer, an HTTP status other than 200, an ErrorCode
	verifyCallAuth  = "auth"  // an ErrorCode of the UserSig family
)

// Relations of verified pairs, for the pairs metric.
const (
	verifyPairsGone    = "gone"
	verifyPairsFriends = "friends"
)

// newVerifyMetrics registers the metrics with controller-runtime's
// registry, or returns those registered before (several managers in one
// process, as in tests).
func newVerifyMetrics() (*verifyMetrics, error) {
	m := &verifyMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "friend_deletion_verify_calls_total",
			Help: "v4/sns/friend_check calls made to verify FriendDeletions' pairs, by CallbackConfig and result (ok, error, auth).",
		}, []string{"namespace", "config", "result"}),
		pairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "friend_deletion_verify_pairs_total",
			Help: "Pairs of finished verifications, by CallbackConfig and relation: gone (cleaned up) or friends (still or again a friendship; skipped or failed).",
		}, []string{"namespace", "config", "relation"}),
	}
	var err error
	m.calls = registerCollector(m.calls, &err)
	m.pairs = registerCollector(m.pairs, &err)
	return m, err
}

func registerCollector[C prometheus.Collector](c C, errp *error) C {
	if err := ctrlmetrics.Registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}
