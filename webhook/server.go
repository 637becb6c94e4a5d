package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Names of the serving certificate and key in Options.CertDir.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Timeouts of the receiver's HTTP server. The IM backend keeps connections
// alive between callbacks, so idle ones are kept a while.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 20 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

// readiness is the receiver's readiness: an error until it serves.
type readiness struct {
	err atomic.Pointer[error]
}

func newReadiness() *readiness {
	r := &readiness{}
	r.set(errors.New("callback receiver has not started"))
	return r
}

func (r *readiness) set(err error) { r.err.Store(&err) }

func (r *readiness) check() error { return *r.err.Load() }

// server is the manager Runnable that serves the receiver. It runs on every
// replica, leader or not.
type server struct {
	opts    Options
	handler http.Handler
	// informers, when set, are warmed up for CallbackConfigs before the
	// port opens, so that the first callback does not wait. Secrets are not
	// watched: see polledSecretMetadata.
	informers cache.Informers
	ready     *readiness
	log       logr.Logger
	// addr is the address listened on, once listening.
	addr atomic.Pointer[net.Addr]
	// done is closed when the server has stopped and in-flight callbacks
	// have been answered.
	done chan struct{}
}

func newServer(opts Options, handler http.Handler, informers cache.Informers, ready *readiness, log logr.Logger) *server {
	return &server{opts: opts, handler: handler, informers: informers, ready: ready, log: log, done: make(chan struct{})}
}

// NeedLeaderElection is false: every replica answers callbacks.
func (s *server) NeedLeaderElection() bool { return false }

// Addr is the address the server listens on, or nil before it does.
func (s *server) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Start serves until ctx ends, then lets in-flight callbacks finish.
func (s *server) Start(ctx context.Context) error {
	defer close(s.done)
	if s.informers != nil {
		s.ready.set(errors.New("callback receiver is waiting for its caches to sync"))
		for _, obj := range []client.Object{&snsv1alpha1.CallbackConfig{}} {
			if _, err := s.informers.GetInformer(ctx, obj); err != nil {
				return fmt.Errorf("warming the cache for %T: %w", obj, err)
			}
		}
	}

	tlsConfig, err := s.tlsConfig(ctx)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.opts.BindAddress)
	if err != nil {
		return fmt.Errorf("callback receiver listening on %s: %w", s.opts.BindAddress, err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	addr := ln.Addr()
	s.addr.Store(&addr)

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(logWriter{s.log}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("callback receiver listening", "address", addr.String(), "tls", tlsConfig != nil)
	s.ready.set(nil)

	select {
	case err := <-errc:
		s.ready.set(errors.New("callback receiver stopped"))
		return fmt.Errorf("callback receiver: %w", err)
	case <-ctx.Done():
	}
	return s.shutdown(srv, errc)
}

// shutdown stops srv so that no callback is refused on the way: readiness
// fails at once, and the server keeps answering for ShutdownDelay while
// endpoints and load balancers drop this replica; then it turns keep-alives
// off, so that each connection closes after its current answer, and waits up
// to ShutdownTimeout for the callbacks in flight. Each of those ends stored,
// spooled or answered FAIL; the spool closes only after this returns.
func (s *server) shutdown(srv *http.Server, errc <-chan error) error {
	s.ready.set(errors.New("callback receiver is shutting down"))
	if d := s.opts.ShutdownDelay; d > 0 {
		s.log.Info("callback receiver shutting down: still answering while endpoints drop this replica", "delay", d)
		select {
		case <-time.After(d):
		case err := <-errc:
			return fmt.Errorf("callback receiver: %w", err)
		}
	}
	srv.SetKeepAlivesEnabled(false)
	shutdown, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		s.log.Error(err, "callback receiver did not finish in-flight callbacks in time")
		return nil
	}
	s.log.Info("callback receiver stopped: every callback in flight was answered")
	return nil
}

// tlsConfig serves tls.crt and tls.key from CertDir when both are there,
// reloading them when they change; it returns nil for plain HTTP.
func (s *server) tlsConfig(ctx context.Context) (*tls.Config, error) {
	if s.opts.CertDir == "" {
		return nil, nil
	}
	cert, key := filepath.Join(s.opts.CertDir, CertFile), filepath.Join(s.opts.CertDir, KeyFile)
	for _, f := range []string{cert, key} {
		if !fileExists(f) {
			// Serving plain HTTP where HTTPS was asked for would put tokens
			// and accounts on the wire in the clear.
			return nil, fmt.Errorf("callback receiver: --receiver-cert-dir %s has no %s: give it tls.crt and tls.key, or leave the flag empty to serve plain HTTP", s.opts.CertDir, filepath.Base(f))
		}
	}
	watcher, err := certwatcher.New(cert, key)
	if err != nil {
		return nil, fmt.Errorf("loading the callback receiver's certificate: %w", err)
	}
	go func() {
		if err := watcher.Start(ctx); err != nil {
			s.log.Error(err, "watching the callback receiver's certificate")
		}
	}()
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: watcher.GetCertificate,
		// HTTP/1.1 only: the IM backend speaks it, and it keeps HTTP/2's
		// stream-reset attacks out.
		NextProtos: []string{"http/1.1"},
	}, nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// logWriter sends the HTTP server's own messages (TLS handshake errors and
// the like) to the logger, at debug level.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
