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
}

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
	}
	var err error
	m.callbacks = register(reg, m.callbacks, &err)
	m.pairs = register(reg, m.pairs, &err)
	m.duration = register(reg, m.duration, &err)
	m.inFlight = register(reg, m.inFlight, &err)
	m.writeDuration = register(reg, m.writeDuration, &err)
	m.statusFlushes = register(reg, m.statusFlushes, &err)
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
