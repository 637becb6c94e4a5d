package webhook

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

const metricsNamespace = "friend_deletion_receiver"

// metrics are the receiver's Prometheus metrics. Config labels are set only
// for configs that exist, so that requests to made-up paths cannot grow the
// number of series.
type metrics struct {
	callbacks     *prometheus.CounterVec
	pairs         *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	inFlight      prometheus.Gauge
	writeDuration *prometheus.HistogramVec
	statusFlushes *prometheus.CounterVec

	// The spool's (see spool.go).
	spoolEntries       prometheus.Gauge
	spoolBytes         prometheus.Gauge
	spoolOldestAge     prometheus.Gauge
	spoolRejected      prometheus.Gauge
	spoolWrites        *prometheus.CounterVec
	spoolWriteDuration prometheus.Histogram
	replays            prometheus.Counter
	replayFailures     *prometheus.CounterVec
}

// Results of writing a callback to the spool, for the spool writes metric.
const (
	spoolWriteSpooled   = "spooled"
	spoolWriteDuplicate = "duplicate"
	spoolWriteFull      = "full"
	spoolWriteError     = "error"
	spoolWriteTimeout   = "timeout"
)

// Reasons a replay failed, for the replay failures metric.
const (
	replayTransient = "transient"
	replayRejected  = "rejected"
	replaySpool     = "spool"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "callbacks_total",
			Help:      "Callbacks answered, by CallbackConfig, result (OK or FAIL) and reason.",
		}, []string{"namespace", "config", "result", "reason"}),
		pairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "pairs_accepted_total",
			Help:      "Friend pairs in accepted callbacks, after duplicates within a callback are removed.",
		}, []string{"namespace", "config"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "request_duration_seconds",
			Help:      "Time from a callback's arrival to its answer, by HTTP status code.",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2, 5},
		}, []string{"code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "requests_in_flight",
			Help:      "Callbacks being handled now.",
		}),
		writeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "apiserver_write_duration_seconds",
			Help:      "Time of each FriendDeletion create request to the API server, by outcome (created, already_exists, failed).",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2},
		}, []string{"outcome"}),
		statusFlushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "status_flushes_total",
			Help:      "CallbackConfig status counter writes, by result (ok, error).",
		}, []string{"result"}),
		spoolEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "spool_entries",
			Help:      "Callbacks waiting in this replica's spool for the API server.",
		}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "spool_bytes",
			Help:      "Bytes of the entries in this replica's spool, counted against --receiver-spool-max-bytes.",
		}),
		spoolOldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "spool_oldest_entry_age_seconds",
			Help:      "How long the oldest callback in this replica's spool has waited; 0 when the spool is empty.",
		}),
		spoolRejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "spool_rejected_entries",
			Help:      "Spooled callbacks the API server refused for good on replay (invalid, too large, namespace gone), kept aside in this replica's spool; they count against --receiver-spool-max-bytes until requeued with --receiver-spool-requeue-rejected or the spool file is removed.",
		}),
		spoolWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "spool_writes_total",
			Help:      "Callbacks sent to the spool, by result (spooled, duplicate, full, error, timeout).",
		}, []string{"result"}),
		spoolWriteDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "spool_write_duration_seconds",
			Help:      "Time of each spool write, fsync included.",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "spool_replays_total",
			Help:      "Spooled callbacks stored by the replayer (created, or found already there).",
		}),
		replayFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "spool_replay_failures_total",
			Help:      "Failed replays of spooled callbacks, by reason: transient (retried), rejected (the API server refused it for good; kept aside), spool (reading or updating the spool failed).",
		}, []string{"reason"}),
	}
	var err error
	m.callbacks = register(reg, m.callbacks, &err)
	m.pairs = register(reg, m.pairs, &err)
	m.duration = register(reg, m.duration, &err)
	m.inFlight = register(reg, m.inFlight, &err)
	m.writeDuration = register(reg, m.writeDuration, &err)
	m.statusFlushes = register(reg, m.statusFlushes, &err)
	m.spoolEntries = register(reg, m.spoolEntries, &err)
	m.spoolBytes = register(reg, m.spoolBytes, &err)
	m.spoolOldestAge = register(reg, m.spoolOldestAge, &err)
	m.spoolRejected = register(reg, m.spoolRejected, &err)
	m.spoolWrites = register(reg, m.spoolWrites, &err)
	m.spoolWriteDuration = register(reg, m.spoolWriteDuration, &err)
	m.replays = register(reg, m.replays, &err)
	m.replayFailures = register(reg, m.replayFailures, &err)
	return m, err
}

// register registers c, or returns the collector registered before under
// the same name (when the receiver is set up twice in one process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
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
