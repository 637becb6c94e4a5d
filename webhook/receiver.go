package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// MaxTokenBytes is the longest callback authentication token the IM console
// allows.
const MaxTokenBytes = 128

// Receiver answers Sns.CallbackFriendDelete callbacks: it checks each one
// against its CallbackConfig and, when every rule holds, stores it as a
// FriendDeletion before answering OK.
type Receiver struct {
	// reader reads CallbackConfigs, from the manager's cache.
	reader client.Reader
	// secrets reads token Secrets.
	secrets *tokenSecrets
	store   *store
	rules   rules
	maxBody int64
	// bodies holds a slot for each body being read and parsed; a request
	// that finds none free is answered 503 at once.
	bodies   chan struct{}
	budget   time.Duration
	clock    clock.PassiveClock
	metrics  *metrics
	counters *counters
	log      logr.Logger
	ready    *readiness

	// spool, when set, keeps what the API server does not take within
	// spoolAfter of arrival (see keep).
	spool      *spool
	spoolAfter time.Duration
}

// ReadyCheck fails until the receiver is listening with its caches synced,
// and again once it shuts down. It is a healthz.Checker.
func (r *Receiver) ReadyCheck(_ *http.Request) error { return r.ready.check() }

// ServeHTTP answers one callback with the protocol's JSON body.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	r.metrics.inFlight.Inc()
	defer r.metrics.inFlight.Dec()

	// The budget runs from arrival. The write is not cut short when the
	// caller hangs up: the deletion happened, and keeping it is better than
	// losing it.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(req.Context()), start.Add(r.budget))
	defer cancel()

	code := r.handle(ctx, w, req)
	r.metrics.duration.WithLabelValues(strconv.Itoa(code)).Observe(time.Since(start).Seconds())
}

// handle runs the rules in order and answers; it returns the HTTP status.
func (r *Receiver) handle(ctx context.Context, w http.ResponseWriter, req *http.Request) int {
	arrival := r.clock.Now()
	key, ok := route(req.URL.Path)
	if !ok {
		return r.fail(w, req, nil, reject(http.StatusNotFound, ReasonUnknownPath, "unknown path: callbacks go to "+PathPrefix+"<namespace>/<name>"))
	}
	cfg := &snsv1alpha1.CallbackConfig{}
	if err := r.reader.Get(ctx, key, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return r.fail(w, req, nil, reject(http.StatusNotFound, ReasonConfigNotFound, "no CallbackConfig at this path"))
		}
		return r.fail(w, req, nil, withCause(reject(http.StatusServiceUnavailable, ReasonConfigUnavailable, "the CallbackConfig cannot be read"), err))
	}

	query, queryErr := url.ParseQuery(req.URL.RawQuery)
	release := func() {}
	in := inbound{
		method:       req.Method,
		query:        query,
		queryErr:     queryErr,
		remoteAddr:   req.RemoteAddr,
		forwardedFor: req.Header.Values("X-Forwarded-For"),
		body: func() ([]byte, *rejection) {
			body, done, rej := r.readBody(req)
			release = done
			return body, rej
		},
	}
	token := func() (string, error) { return r.token(ctx, cfg) }
	cb, rej := r.rules.check(cfg, in, token, arrival)
	// The body is parsed; what the callback keeps of it is its pairs and
	// its hash, so its slot is free for another.
	release()
	if rej != nil {
		return r.fail(w, req, cfg, rej)
	}

	fd := newFriendDeletion(cfg, cb, arrival)
	if rej := checkStoredSize(fd); rej != nil {
		return r.fail(w, req, cfg, rej)
	}
	if rej := r.keep(ctx, fd); rej != nil {
		return r.fail(w, req, cfg, rej)
	}
	writeOK(w)
	r.metrics.callbacks.WithLabelValues(cfg.Namespace, cfg.Name, "OK", ReasonAccepted).Inc()
	r.metrics.pairs.WithLabelValues(cfg.Namespace, cfg.Name).Add(float64(len(cb.pairs)))
	r.counters.record(key, true, arrival)
	r.log.V(1).Info("callback stored", "namespace", fd.Namespace, "frienddeletion", fd.Name, "pairs", len(cb.pairs))
	return http.StatusOK
}

// fail answers FAIL, counts the rejection and logs one line saying why.
func (r *Receiver) fail(w http.ResponseWriter, req *http.Request, cfg *snsv1alpha1.CallbackConfig, rej *rejection) int {
	writeRejection(w, rej)
	ns, name := "", ""
	kv := []any{"reason", rej.reason, "status", rej.status, "errorInfo", rej.info, "remoteAddr", req.RemoteAddr}
	if cfg != nil {
		ns, name = cfg.Namespace, cfg.Name
		r.counters.record(types.NamespacedName{Namespace: ns, Name: name}, false, r.clock.Now())
		kv = append(kv, "namespace", ns, "config", name)
	} else {
		kv = append(kv, "path", truncate(req.URL.Path, 256))
	}
	if rej.cause != nil {
		kv = append(kv, "error", rej.cause.Error())
	}
	r.log.Info("callback rejected", kv...)
	r.metrics.callbacks.WithLabelValues(ns, name, "FAIL", rej.reason).Inc()
	return rej.status
}

// readBody reads at most maxBody bytes of the body, in a slot of
// r.bodies that the caller frees with release once it has parsed them.
//
// The buffer grows with the bytes that arrive, never with what
// Content-Length promises, so a request costs the receiver what its sender
// sent. The slots bound how many bodies are read at once: a sender that
// opens many connections and sends their bodies slowly gets 503 past them,
// rather than a share of the heap.
func (r *Receiver) readBody(req *http.Request) (body []byte, release func(), rej *rejection) {
	tooLarge := rejectf(http.StatusRequestEntityTooLarge, ReasonBodyTooLarge, "body is larger than %d bytes", r.maxBody)
	if req.ContentLength > r.maxBody {
		return nil, func() {}, tooLarge
	}
	select {
	case r.bodies <- struct{}{}:
	default:
		return nil, func() {}, rejectf(http.StatusServiceUnavailable, ReasonBusy, "the receiver is reading %d bodies already", cap(r.bodies))
	}
	release = sync.OnceFunc(func() { <-r.bodies })
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(req.Body, r.maxBody+1)); err != nil {
		return nil, release, withCause(reject(http.StatusBadRequest, ReasonBodyUnreadable, "body could not be read"), err)
	}
	if int64(buf.Len()) > r.maxBody {
		return nil, release, tooLarge
	}
	return buf.Bytes(), release, nil
}

// errToken says why the token cannot be used; never the token itself.
var errToken = errors.New("callback authentication token")

// token reads the callback authentication token from the config's Secret,
// so that a rotated token takes effect at once (see tokenSecrets). Leading
// and trailing white space (a file's final line break, typically) is not
// part of it, as the CallbackConfig reconciler also reads it.
func (r *Receiver) token(ctx context.Context, cfg *snsv1alpha1.CallbackConfig) (string, error) {
	ref := cfg.Spec.Auth.TokenSecretRef
	sec, err := r.secrets.Get(ctx, types.NamespacedName{Namespace: cfg.Namespace, Name: ref.Name})
	if err != nil {
		return "", fmt.Errorf("%w: reading Secret %s: %w", errToken, ref.Name, err)
	}
	v, ok := sec.Data[ref.Key]
	if !ok {
		return "", fmt.Errorf("%w: Secret %s has no key %s", errToken, ref.Name, ref.Key)
	}
	tok := strings.TrimSpace(string(v))
	if tok == "" || len(tok) > MaxTokenBytes {
		return "", fmt.Errorf("%w: the value in Secret %s key %s must be 1 to %d bytes", errToken, ref.Name, ref.Key, MaxTokenBytes)
	}
	return tok, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
