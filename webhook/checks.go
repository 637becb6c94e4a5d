package webhook

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// DefaultMaxClockSkew is how far RequestTime may be from the receiver's clock
// when a CallbackConfig's auth leaves maxClockSkew out.
const DefaultMaxClockSkew = time.Minute

// inbound is what the acceptance rules read from an HTTP request.
type inbound struct {
	method       string
	query        url.Values
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
	clientIP    string
	optPlatform string
	// body is the raw body, hashed into the name when the callback carries
	// neither a request id nor RequestTime.
	body []byte
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
		clientIP:    in.query.Get("ClientIP"),
		optPlatform: in.query.Get("OptPlatform"),
		body:        body,
	}, nil
}

// checkAuth checks Sign and RequestTime against the token.
func checkAuth(auth *snsv1alpha1.CallbackAuth, q url.Values, token func() (string, error), now time.Time) *rejection {
	tok, err := token()
	if err != nil {
		return withCause(reject(http.StatusServiceUnavailable, ReasonTokenUnavailable, "callback authentication token is unavailable"), err)
	}
	sig, okSig := single(q, "Sign")
	rt, okTime := single(q, "RequestTime")
	if !okSig || !okTime {
		return reject(http.StatusUnauthorized, ReasonSignMissing, "Sign and RequestTime are required")
	}
	if !signMatches(tok, rt, sig) {
		return reject(http.StatusUnauthorized, ReasonSignMismatch, "Sign does not match")
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

// requestID returns the undocumented request id the IM backend sometimes
// sends, spelled RequestID or RequestId (any case is taken). With several,
// the first by key and position wins, so redeliveries agree.
func requestID(q url.Values) string {
	var keys []string
	for k := range q {
		if strings.EqualFold(k, "RequestID") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range q[k] {
			if v != "" {
				return v
			}
		}
	}
	return ""
}
