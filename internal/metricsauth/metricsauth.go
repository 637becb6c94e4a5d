// Package metricsauth serves the manager's Prometheus metrics the way
// kubebuilder v4 scaffolds it: over HTTPS, and only to callers the API
// server authenticates (TokenReview) and authorizes to get /metrics
// (SubjectAccessReview), such as a Prometheus whose ServiceAccount is bound
// to the metrics-reader ClusterRole.
//
// Both the receiver and the controllers serve metrics, so both roles are
// bound to the ClusterRole generated from the markers below
// (config/rbac/metrics_auth_role.yaml).
package metricsauth

import (
	"crypto/tls"
	"flag"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Options configure the metrics endpoint.
type Options struct {
	// BindAddress is the metrics endpoint's host:port; "0" turns it off.
	BindAddress string
	// Secure serves HTTPS and admits only authenticated and authorized
	// callers. Off, metrics are plain HTTP to anyone who reaches the port:
	// for development only.
	Secure bool
	// CertDir holds tls.crt and tls.key, reloaded when they change. Empty,
	// or without those files, the endpoint serves a self-signed certificate
	// made at start.
	CertDir string
}

// DefaultOptions are the flags' defaults: HTTPS with authentication and
// authorization on port 8443.
func DefaultOptions() Options {
	return Options{BindAddress: ":8443", Secure: true}
}

// BindFlags registers the metrics flags on fs, defaulting to the values
// already in o.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BindAddress, "metrics-bind-address", o.BindAddress,
		"Address of the Prometheus metrics endpoint; 0 turns it off.")
	fs.BoolVar(&o.Secure, "metrics-secure", o.Secure,
		"Serve metrics over HTTPS to callers the API server authenticates and authorizes to get /metrics. "+
			"--metrics-secure=false serves plain HTTP to anyone: for development only.")
	fs.StringVar(&o.CertDir, "metrics-cert-dir", o.CertDir,
		"Folder with tls.crt and tls.key for the metrics endpoint, reloaded on change; without them a self-signed certificate is used.")
}

// ServerOptions are the controller-runtime metrics server options o asks for.
func (o Options) ServerOptions() metricsserver.Options {
	if !o.Secure {
		return metricsserver.Options{BindAddress: o.BindAddress}
	}
	opts := metricsserver.Options{
		BindAddress:    o.BindAddress,
		SecureServing:  true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
		// HTTP/2 off, as kubebuilder scaffolds it: the HTTP/2 stream
		// cancellation and rapid reset CVEs (GHSA-qppj-fm5r-hxr3,
		// GHSA-4374-p667-p6c8).
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if o.CertDir != "" {
		opts.CertDir = o.CertDir
	}
	return opts
}
