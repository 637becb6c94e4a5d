package webhook

import (
	"flag"
	"fmt"
	"time"
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
	}
	return nil
}
