package webhook

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Options configure the callback receiver. DefaultOptions gives the values
// the flags default to.
type Options struct {
	// BindAddress is the host:port the receiver listens on.
	BindAddress string

	// CertDir is a folder holding tls.crt and tls.key, which the receiver
	// serves HTTPS with, reloading them when they change. Empty serves plain
	// HTTP; a folder without both files is an error at start.
	CertDir string

	// MaxBodyBytes is the largest request body accepted; larger ones are
	// answered 413.
	MaxBodyBytes int64

	// MaxConcurrentBodies bounds how many request bodies are read and parsed
	// at once; a request past it is answered 503. With MaxBodyBytes it
	// bounds the memory bodies can take.
	MaxConcurrentBodies int

	// WriteTimeout is the budget, counted from the request's arrival, for
	// storing the FriendDeletion. A callback whose object is not stored within
	// it is answered FAIL. Keep it below the IM backend's 2s wait.
	WriteTimeout time.Duration

	// TrustForwardedFor takes the source address from the last entry of
	// X-Forwarded-For (the one the nearest proxy appended) instead of the
	// connection's peer. Enable it only behind a proxy that sets the header.
	TrustForwardedFor bool

	// StatusFlushInterval is how often the accepted and rejected counters and
	// lastCallbackTime are written to each CallbackConfig's status.
	StatusFlushInterval time.Duration

	// KubeAPIQPS and KubeAPIBurst bound the receiver's own client for
	// creating FriendDeletions, kept apart from the controllers' client so
	// that neither throttles the other. A negative QPS turns the client-side
	// limit off.
	KubeAPIQPS   float64
	KubeAPIBurst int

	// ShutdownTimeout bounds how long in-flight callbacks may take to finish
	// when the manager stops.
	ShutdownTimeout time.Duration

	// ShutdownDelay is how long the receiver keeps serving after the manager
	// is told to stop (SIGTERM) with its readiness already failing, so that
	// endpoints and load balancers stop sending it callbacks before it
	// closes its port.
	ShutdownDelay time.Duration

	// SpoolDir is the folder of the replica's spool, where callbacks the API
	// server does not take within SpoolAfter are kept, fsynced, until the
	// replayer stores them. Empty turns the spool off: such callbacks are
	// answered FAIL.
	SpoolDir string

	// SpoolMaxBytes bounds the spooled objects' bytes; past it callbacks
	// that cannot be stored are answered FAIL. The database file can grow to
	// about twice this.
	SpoolMaxBytes int64

	// SpoolAfter is the part of WriteTimeout, from arrival, in which the
	// receiver tries the API server before it spools; the rest is the spool
	// write's.
	SpoolAfter time.Duration

	// SpoolDrainTimeout bounds the replayer's last attempt, on shutdown, to
	// empty the spool into the API server.
	SpoolDrainTimeout time.Duration

	// SpoolRequeueRejected moves, at start, the spool's entries that the API
	// server refused for good on replay back to the waiting entries, to be
	// tried again once the cause is fixed (a namespace created again, say).
	SpoolRequeueRejected bool

	// ReplicaName names this replica in the CallbackConfig condition that
	// reports its spooled callbacks. Defaults to the host name, which is the
	// pod's name.
	ReplicaName string
}

// DefaultOptions returns the receiver's defaults.
func DefaultOptions() Options {
	return Options{
		BindAddress:         ":8080",
		MaxBodyBytes:        1 << 20,
		MaxConcurrentBodies: 32,
		WriteTimeout:        1500 * time.Millisecond,
		StatusFlushInterval: 5 * time.Second,
		KubeAPIQPS:          1000,
		KubeAPIBurst:        2000,
		ShutdownTimeout:     10 * time.Second,
		ShutdownDelay:       5 * time.Second,
		SpoolMaxBytes:       64 << 20,
		SpoolAfter:          time.Second,
		SpoolDrainTimeout:   5 * time.Second,
	}
}

// BindFlags registers the receiver's flags on fs, defaulting to the values
// already in o.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BindAddress, "receiver-bind-address", o.BindAddress,
		"Address the callback receiver listens on.")
	fs.StringVar(&o.CertDir, "receiver-cert-dir", o.CertDir,
		"Folder with tls.crt and tls.key for the callback receiver to serve HTTPS with, reloaded on change; empty serves plain HTTP. A folder without both files stops the start.")
	fs.Int64Var(&o.MaxBodyBytes, "receiver-max-body-bytes", o.MaxBodyBytes,
		"Largest callback body accepted; larger ones are answered 413.")
	fs.IntVar(&o.MaxConcurrentBodies, "receiver-max-concurrent-bodies", o.MaxConcurrentBodies,
		"How many callback bodies are read at once; past it a callback is answered 503. With --receiver-max-body-bytes it bounds the memory bodies take.")
	fs.DurationVar(&o.WriteTimeout, "receiver-write-timeout", o.WriteTimeout,
		"Budget from a callback's arrival for storing its FriendDeletion; past it the callback is answered FAIL. Keep it under the IM backend's 2s.")
	fs.BoolVar(&o.TrustForwardedFor, "receiver-trust-forwarded-for", o.TrustForwardedFor,
		"Take the callback's source address from the last X-Forwarded-For entry. Only behind a proxy that sets it.")
	fs.DurationVar(&o.StatusFlushInterval, "receiver-status-flush-interval", o.StatusFlushInterval,
		"How often callback counters are written to CallbackConfig status.")
	fs.Float64Var(&o.KubeAPIQPS, "receiver-kube-api-qps", o.KubeAPIQPS,
		"Client-side QPS limit of the receiver's API server client (negative: none).")
	fs.IntVar(&o.KubeAPIBurst, "receiver-kube-api-burst", o.KubeAPIBurst,
		"Client-side burst of the receiver's API server client.")
	fs.DurationVar(&o.ShutdownTimeout, "receiver-shutdown-timeout", o.ShutdownTimeout,
		"How long in-flight callbacks may take to finish on shutdown.")
	fs.DurationVar(&o.ShutdownDelay, "receiver-shutdown-delay", o.ShutdownDelay,
		"How long the receiver keeps serving, not ready, after SIGTERM, so that endpoints drop the pod before its port closes.")
	fs.StringVar(&o.SpoolDir, "receiver-spool-dir", o.SpoolDir,
		"Folder of the replica's spool for callbacks the API server does not take in time; empty turns the spool off.")
	fs.Int64Var(&o.SpoolMaxBytes, "receiver-spool-max-bytes", o.SpoolMaxBytes,
		"Largest total size of spooled objects; when full, callbacks that cannot be stored are answered FAIL 503.")
	fs.DurationVar(&o.SpoolAfter, "receiver-spool-after", o.SpoolAfter,
		"Part of --receiver-write-timeout spent trying the API server before spooling; the rest is for the spool write.")
	fs.DurationVar(&o.SpoolDrainTimeout, "receiver-spool-drain-timeout", o.SpoolDrainTimeout,
		"How long the replayer tries, on shutdown, to store what is left in the spool.")
	fs.BoolVar(&o.SpoolRequeueRejected, "receiver-spool-requeue-rejected", o.SpoolRequeueRejected,
		"At start, move the spool's entries the API server refused for good on replay (see the spool_rejected_entries metric) back to be replayed again.")
	fs.StringVar(&o.ReplicaName, "receiver-replica-name", o.ReplicaName,
		"Name of this replica in the CallbackConfig condition that reports its spooled callbacks; defaults to the host name.")
}

// statusFinalFlush bounds the status flusher's last write on shutdown, after
// the server and the replayer have finished.
const statusFinalFlush = 5 * time.Second

// ShutdownBudget is the longest the receiver takes to stop once told to:
// it keeps serving for ShutdownDelay, waits up to ShutdownTimeout for the
// callbacks in flight, lets the replayer try for SpoolDrainTimeout to empty
// the spool, and writes the callback counters to status one last time (up
// to 5 s). The manager's GracefulShutdownTimeout must be at least this, or
// it stops waiting while the receiver still answers or drains; and the
// pod's terminationGracePeriodSeconds must exceed it, or the kubelet kills
// the process first. With the defaults it is 25 s: ShutdownDelay + 20 s.
func (o *Options) ShutdownBudget() time.Duration {
	return o.ShutdownDelay + o.ShutdownTimeout + o.SpoolDrainTimeout + statusFinalFlush
}

// Validate reports the first option that cannot work.
func (o *Options) Validate() error {
	switch {
	case o.BindAddress == "":
		return fmt.Errorf("--receiver-bind-address must not be empty")
	case o.MaxBodyBytes <= 0:
		return fmt.Errorf("--receiver-max-body-bytes must be positive, got %d", o.MaxBodyBytes)
	case o.MaxConcurrentBodies <= 0:
		return fmt.Errorf("--receiver-max-concurrent-bodies must be positive, got %d", o.MaxConcurrentBodies)
	case o.WriteTimeout <= 0:
		return fmt.Errorf("--receiver-write-timeout must be positive, got %s", o.WriteTimeout)
	case o.StatusFlushInterval <= 0:
		return fmt.Errorf("--receiver-status-flush-interval must be positive, got %s", o.StatusFlushInterval)
	case o.KubeAPIQPS > 0 && o.KubeAPIBurst <= 0:
		return fmt.Errorf("--receiver-kube-api-burst must be positive when --receiver-kube-api-qps is, got %d", o.KubeAPIBurst)
	case o.ShutdownTimeout < 0:
		return fmt.Errorf("--receiver-shutdown-timeout must not be negative, got %s", o.ShutdownTimeout)
	case o.ShutdownDelay < 0:
		return fmt.Errorf("--receiver-shutdown-delay must not be negative, got %s", o.ShutdownDelay)
	case o.SpoolDir != "" && o.SpoolMaxBytes <= 0:
		return fmt.Errorf("--receiver-spool-max-bytes must be positive, got %d", o.SpoolMaxBytes)
	case o.SpoolDir != "" && (o.SpoolAfter <= 0 || o.SpoolAfter >= o.WriteTimeout):
		return fmt.Errorf("--receiver-spool-after must be positive and less than --receiver-write-timeout (%s), got %s", o.WriteTimeout, o.SpoolAfter)
	case o.SpoolDrainTimeout < 0:
		return fmt.Errorf("--receiver-spool-drain-timeout must not be negative, got %s", o.SpoolDrainTimeout)
	case o.ReplicaName != "":
		return checkReplicaName(o.ReplicaName)
	}
	return nil
}

// checkReplicaName fails when name cannot end a condition type.
func checkReplicaName(name string) error {
	if errs := validation.IsQualifiedName(snsv1alpha1.SpoolConditionType(name)); len(errs) > 0 {
		return fmt.Errorf("--receiver-replica-name %q cannot name a condition: %s", name, strings.Join(errs, "; "))
	}
	return nil
}
