package webhook

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// ReadyzCheckName is the name SetupWithManager registers the receiver's
// readiness check under.
const ReadyzCheckName = "callback-receiver"

// userAgent names the receiver's writes in API server audit logs and
// priority-and-fairness matching.
const userAgent = "friend-deletion-operator/callback-receiver"

// The receiver's permissions, generated into config/rbac/receiver_role.yaml
// (`make manifests`, paths=./webhook/...). They are all it needs when it
// runs alone (--role=receiver): it reads CallbackConfigs from its cache and,
// for the status counters, from the API server; it patches their status;
// and it creates FriendDeletions. It holds no right on Secrets: it reads
// token Secrets by name, with get and nothing else (see
// polledSecretMetadata), and may do so only because the controllers grant
// it, for each CallbackConfig, get on the one Secret the config's
// auth.tokenSecretRef names (a Role and RoleBinding owned by the config,
// see controllers/receiver_access.go). A Secret it was not granted is
// refused, and answered as a missing one is (see unreadable).
//
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=callbackconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=callbackconfigs/status,verbs=patch
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=frienddeletions,verbs=create

// SetupWithManager adds the callback receiver to mgr: the HTTP server, which
// runs on every replica without leader election, and the flusher that writes
// callback counters to CallbackConfig status in batches. It registers the
// receiver's Prometheus metrics with controller-runtime's registry, which the
// manager's metrics endpoint serves, and its readiness check as
// "callback-receiver".
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	r, err := setup(mgr, opts, ctrlmetrics.Registry)
	if err != nil {
		return err
	}
	return mgr.AddReadyzCheck(ReadyzCheckName, r.ReadyCheck)
}

// parts are what setup adds to a manager, for tests to reach.
type parts struct {
	*Receiver
	server  *server
	flusher *statusFlusher
	// replayer is nil without a spool.
	replayer *replayer
}

// spoolLockTimeout bounds the wait for another process to release the
// spool's database (a predecessor still shutting down on the same volume).
const spoolLockTimeout = 30 * time.Second

func setup(mgr ctrl.Manager, opts Options, reg prometheus.Registerer) (*parts, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("registering callback receiver metrics: %w", err)
	}
	writer, err := newWriter(mgr.GetConfig(), mgr.GetScheme(), mgr.GetRESTMapper(), opts)
	if err != nil {
		return nil, err
	}
	log := mgr.GetLogger().WithName("callback-receiver")
	ready := newReadiness()
	counts := newCounters()
	r := &Receiver{
		reader:   mgr.GetClient(),
		secrets:  newTokenSecrets(newPolledSecretMetadata(mgr.GetAPIReader(), tokenSecretPollInterval, clock.RealClock{}), mgr.GetAPIReader()),
		store:    &store{client: writer, metrics: m},
		rules:    rules{trustForwardedFor: opts.TrustForwardedFor},
		maxBody:  opts.MaxBodyBytes,
		bodies:   make(chan struct{}, opts.MaxConcurrentBodies),
		budget:   opts.WriteTimeout,
		clock:    clock.RealClock{},
		metrics:  m,
		counters: counts,
		log:      log,
		ready:    ready,
	}
	srv := newServer(opts, r, mgr.GetCache(), ready, log)
	flusher := &statusFlusher{
		counters: counts,
		cached:   mgr.GetClient(),
		direct:   mgr.GetAPIReader(),
		writer:   writer,
		interval: opts.StatusFlushInterval,
		metrics:  m,
		log:      log,
		drained:  srv.done,
	}
	p := &parts{Receiver: r, server: srv, flusher: flusher}
	if opts.SpoolDir == "" {
		log.Info("spool disabled (--receiver-spool-dir is empty): a callback the API server does not take in time is answered FAIL")
	} else {
		replica := opts.ReplicaName
		if replica == "" {
			if replica, err = os.Hostname(); err != nil {
				return nil, fmt.Errorf("naming the replica for its spool condition: %w", err)
			}
			if err := checkReplicaName(replica); err != nil {
				return nil, fmt.Errorf("the host name cannot name this replica: %w", err)
			}
		}
		sp, err := openSpool(opts.SpoolDir, opts.SpoolMaxBytes, spoolLockTimeout)
		if err != nil {
			return nil, err
		}
		if opts.SpoolRequeueRejected {
			n, err := sp.requeueRejected()
			if err != nil {
				_ = sp.close()
				return nil, fmt.Errorf("requeueing the spool's rejected entries: %w", err)
			}
			log.Info("requeued the spool's rejected entries for replay (--receiver-spool-requeue-rejected)", "entries", n)
		}
		st := sp.snapshot()
		log.Info("spool enabled", "dir", opts.SpoolDir, "maxBytes", opts.SpoolMaxBytes, "spoolAfter", opts.SpoolAfter,
			"replica", replica, "entries", st.entries, "rejected", st.rejected, "bytes", st.bytes)
		r.spool, r.spoolAfter = sp, opts.SpoolAfter
		p.replayer = &replayer{
			spool: sp, client: writer, metrics: m, log: log.WithName("replay"),
			serverDone: srv.done, drainTimeout: opts.SpoolDrainTimeout, done: make(chan struct{}),
		}
		p.replayer.observe()
		flusher.spool, flusher.replica, flusher.now = sp, replica, time.Now
		flusher.drained = p.replayer.done
	}
	if err := mgr.Add(srv); err != nil {
		return nil, err
	}
	if err := mgr.Add(flusher); err != nil {
		return nil, err
	}
	if p.replayer != nil {
		if err := mgr.Add(p.replayer); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newWriter builds the receiver's own client for writes, with its own
// connection and rate limit, so that callbacks and controllers do not
// throttle each other.
func newWriter(base *rest.Config, scheme *runtime.Scheme, mapper meta.RESTMapper, opts Options) (client.Client, error) {
	cfg := rest.CopyConfig(base)
	cfg.QPS = float32(opts.KubeAPIQPS)
	cfg.Burst = opts.KubeAPIBurst
	cfg.RateLimiter = nil
	cfg.UserAgent = userAgent
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("callback receiver API client: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mapper, HTTPClient: httpClient})
	if err != nil {
		return nil, fmt.Errorf("callback receiver API client: %w", err)
	}
	return c, nil
}
