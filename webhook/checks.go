package webhook

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// DefaultMaxClockSkew is how far RequestTime may be from the receiver's clock
// when a CallbackConfig's auth leaves maxClockSkew out.
const DefaultMaxClockSkew = time.Minute

// inbound is what the acceptance rules read from an HTTP request.
type inbound struct {
	method string
	query  url.Values
	// queryErr is set when the query string does not parse.
	queryErr     error
	remoteAddr   string
	forwardedFor []string
	// body reads the request body; it is called only once the rules before
	// it have passed.
	body func() ([]byte, *rejection)
}

// callback is an accepted Sns.CallbackFriendDelete callback.
type callback struct {
	// pairs holds PairList's pairs in the order received, each once.
	pairs []snsv1alpha1.FriendPair
	// requestID is the RequestID/RequestId query parameter, as sent.
	requestID string
	// requestTime is the RequestTime query parameter, as sent.
	requestTime string
	// signed says the callback's Sign was checked, so RequestTime is the
	// sender's own.
	signed      bool
	clientIP    string
	optPlatform string
	// bodyHash is the SHA-256 of the raw body, hashed into the name when
	// the callback carries neither a request id nor RequestTime.
	bodyHash [sha256.Size]byte
}

// rules are the acceptance rules that follow finding the CallbackConfig.
type rules struct {
	trustForwardedFor bool
}

// check applies the acceptance rules to a callback for cfg, in the order the
// protocol sets, and stops at the first that fails. token returns the
// callback authentication token; it is called only when cfg has auth.
func (ru rules) check(cfg *snsv1alpha1.CallbackConfig, in inbound, token func() (string, error), now time.Time) (*callback, *rejection) {
	spec := &cfg.Spec
	if spec.Suspend {
		return nil, reject(http.StatusServiceUnavailable, ReasonSuspended, "CallbackConfig is suspended")
	}
	if len(spec.AllowedSourceCIDRs) > 0 {
		addr, ok := sourceAddr(in.remoteAddr, in.forwardedFor, ru.trustForwardedFor)
		if !ok || !sourceAllowed(addr, spec.AllowedSourceCIDRs) {
			return nil, reject(http.StatusForbidden, ReasonSourceNotAllowed, "source address is not allowed")
		}
	}
	if in.method != http.MethodPost {
		return nil, reject(http.StatusMethodNotAllowed, ReasonMethodNotAllowed, "method must be POST")
	}
	if in.queryErr != nil {
		// What a proxy in front makes of a query that does not parse is
		// anyone's guess, so no part of it is used.
		return nil, reject(http.StatusBadRequest, ReasonInvalidQuery, "query string does not parse")
	}
	if v, ok := single(in.query, "SdkAppid"); !ok || v != spec.SDKAppID {
		return nil, reject(http.StatusForbidden, ReasonSDKAppIDMismatch, "SdkAppid does not match the CallbackConfig")
	}
	requestTime, _ := single(in.query, "RequestTime")
	if spec.Auth != nil {
		if rej := checkAuth(spec.Auth, in.query, token, now); rej != nil {
			return nil, rej
		}
	}
	if v, ok := single(in.query, "contenttype"); !ok || !strings.EqualFold(v, "json") {
		return nil, reject(http.StatusBadRequest, ReasonContentType, "contenttype must be json")
	}
	body, rej := in.body()
	if rej != nil {
		return nil, rej
	}
	p := parseBody(body)
	if p.invalid != nil {
		return nil, p.invalid
	}
	if p.command != nil {
		return nil, p.command
	}
	if v, ok := single(in.query, "CallbackCommand"); !ok || v != CallbackCommand {
		return nil, reject(http.StatusBadRequest, ReasonCommandMismatch, "CallbackCommand in the query must be "+CallbackCommand)
	}
	if p.pairsErr != nil {
		return nil, p.pairsErr
	}
	return &callback{
		pairs:       p.pairs,
		requestID:   requestID(in.query),
		requestTime: requestTime,
		signed:      spec.Auth != nil,
		clientIP:    in.query.Get("ClientIP"),
		optPlatform: in.query.Get("OptPlatform"),
		bodyHash:    sha256.Sum256(body),
	}, nil
}

// checkAuth checks Sign and RequestTime against the token. What costs
// nothing is checked first: that both are there and well formed, and that
// RequestTime is recent. Only a request that passes those has the token
// read, which may take a request to the API server.
func checkAuth(auth *snsv1alpha1.CallbackAuth, q url.Values, token func() (string, error), now time.Time) *rejection {
	sig, okSig := single(q, "Sign")
	rt, okTime := single(q, "RequestTime")
	if !okSig || !okTime {
		return reject(http.StatusUnauthorized, ReasonSignMissing, "Sign and RequestTime are required")
	}
	t, ok := parseRequestTime(rt)
	if !ok {
		return reject(http.StatusUnauthorized, ReasonRequestTimeInvalid, "RequestTime must be Unix seconds")
	}
	skew := DefaultMaxClockSkew
	if auth.MaxClockSkew != nil {
		skew = auth.MaxClockSkew.Duration
	}
	if !withinSkew(t, now, skew) {
		return reject(http.StatusUnauthorized, ReasonRequestTimeSkew, fmt.Sprintf("RequestTime is more than %s from the receiver's clock", skew))
	}
	if !wellFormedSign(sig) {
		return reject(http.StatusUnauthorized, ReasonSignMismatch, "Sign does not match")
	}
	tok, err := token()
	if apierrors.IsForbidden(err) {
		// The operator grants the receiver the token Secret a config
		// names moments after the config is created or changed.
		return withCause(reject(http.StatusServiceUnavailable, ReasonTokenUnavailable,
			"callback authentication token is unavailable: the receiver may not read its Secret yet (the operator grants it the Secret the CallbackConfig names)"), err)
	}
	if err != nil {
		return withCause(reject(http.StatusServiceUnavailable, ReasonTokenUnavailable, "callback authentication token is unavailable"), err)
	}
	if !signMatches(tok, rt, sig) {
		return reject(http.StatusUnauthorized, ReasonSignMismatch, "Sign does not match")
	}
	return nil
}

// single returns the query parameter's value when it is given exactly once
// and is not empty. A parameter given twice is refused rather than guessed
// at, so that no proxy in front can read it differently.
func single(q url.Values, key string) (string, bool) {
	v := q[key]
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

// requestIDKeys are the spellings of the undocumented request id seen in
// the IM backend's callbacks, in the order they are looked up.
var requestIDKeys = []string{"RequestID", "RequestId"}

// requestID returns the undocumented request id the IM backend sometimes
// sends, under one of requestIDKeys and once; any other spelling, or a key
// given twice, is not a request id.
func requestID(q url.Values) string {
	for _, k := range requestIDKeys {
		if v, ok := single(q, k); ok {
			return v
		}
	}
	return ""
}
