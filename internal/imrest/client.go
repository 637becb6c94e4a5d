// Package imrest calls the Tencent Cloud IM REST API as the app
// administrator: the UserSig that signs each call (TLSSigAPIv2), and
// v4/sns/friend_check, with which the FriendDeletion reconciler verifies
// that a deleted friendship is really gone before cleaning up after it.
package imrest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	// MaxPerRequest is the most To_Account one friend_check call takes.
	MaxPerRequest = 1000
	// MaxRequestsPerSecond is Tencent's limit of friend_check calls per
	// second per app.
	MaxRequestsPerSecond = 200

	// SigLifetime is how long a UserSig this package makes is valid.
	SigLifetime = 24 * time.Hour
	// sigRenewBefore is how long before its expiry a cached UserSig is
	// replaced by a new one.
	sigRenewBefore = time.Hour

	friendCheckPath = "/v4/sns/friend_check"
	// maxAnswer bounds the answer read: 1000 items of at most a few
	// hundred bytes.
	maxAnswer = 4 << 20
)

// Client calls the IM REST API of one app. It is safe for concurrent use.
type Client struct {
	endpoint   string
	sdkAppID   uint64
	identifier string
	http       *http.Client
	limiter    *rate.Limiter
	// maxWait is the longest a call waits for the rate limiter before it
	// gives up with a *RateLimitedError.
	maxWait time.Duration
	now     func() time.Time

	mu         sync.Mutex
	key        []byte
	keyVersion string
	sig        string
	sigExpires time.Time
}

// Config is what a Client is made from.
type Config struct {
	// Endpoint is the REST API's base URL, such as
	// https://adminapisgp.im.qcloud.com.
	Endpoint   string
	SDKAppID   uint64
	Identifier string
	// HTTP sends the requests; it should have a timeout.
	HTTP *http.Client
	// RequestsPerSecond bounds the calls; at most MaxRequestsPerSecond.
	RequestsPerSecond float64
	// MaxWait is the longest a call waits for its turn (default 1s).
	MaxWait time.Duration
	// Now tells the time of UserSigs (default time.Now).
	Now func() time.Time
}

// New returns a Client. Set its secret key with SetKey before calling.
func New(cfg Config) *Client {
	rps := min(cfg.RequestsPerSecond, MaxRequestsPerSecond)
	if rps <= 0 {
		rps = 1
	}
	c := &Client{
		endpoint:   strings.TrimRight(cfg.Endpoint, "/"),
		sdkAppID:   cfg.SDKAppID,
		identifier: cfg.Identifier,
		http:       cfg.HTTP,
		limiter:    rate.NewLimiter(rate.Limit(rps), 1),
		maxWait:    cfg.MaxWait,
		now:        cfg.Now,
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 10 * time.Second}
	}
	if c.maxWait <= 0 {
		c.maxWait = time.Second
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// SetKey sets the app's secret key, from the Secret at resourceVersion
// version. A new version drops the cached UserSig.
func (c *Client) SetKey(key []byte, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if version == c.keyVersion && bytes.Equal(key, c.key) {
		return
	}
	c.key, c.keyVersion = bytes.Clone(key), version
	c.sig, c.sigExpires = "", time.Time{}
}

// userSig returns the cached UserSig, or a new one when there is none or
// it expires within sigRenewBefore.
func (c *Client) userSig() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.key) == 0 {
		return "", errors.New("no secret key set")
	}
	now := c.now()
	if c.sig != "" && now.Before(c.sigExpires.Add(-sigRenewBefore)) {
		return c.sig, nil
	}
	sig, err := UserSig(c.sdkAppID, c.identifier, c.key, now, SigLifetime)
	if err != nil {
		return "", fmt.Errorf("computing the UserSig: %w", err)
	}
	c.sig, c.sigExpires = sig, now.Add(SigLifetime)
	return sig, nil
}

// APIError is an answer with ActionStatus FAIL or a non-zero ErrorCode.
type APIError struct {
	Code int
	Info string
}

func (e *APIError) Error() string {
	if e.Auth() {
		return fmt.Sprintf("the IM backend refused the UserSig: ErrorCode %d (%s); check the secret key, identifier and SDKAppID", e.Code, e.Info)
	}
	return fmt.Sprintf("the IM backend answered ErrorCode %d (%s)", e.Code, e.Info)
}

// Auth reports whether the error is about the caller's credentials, which
// no retry with the same secret key can fix: the UserSig family of error
// codes (70001 to 70020: expired, malformed, signed with another key, for
// another identifier or SDKAppID) and 70052 (UserSig invalidated).
func (e *APIError) Auth() bool {
	return (e.Code >= 70001 && e.Code <= 70020) || e.Code == 70052
}

// IsAuth reports whether err is an APIError about credentials.
func IsAuth(err error) bool {
	var a *APIError
	return errors.As(err, &a) && a.Auth()
}

// RateLimitedError says the call would have waited longer than the
// client's MaxWait for its turn; try again After.
type RateLimitedError struct{ After time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("friend_check rate limit reached; next turn in %s", e.After.Round(time.Millisecond))
}

// CheckItem is one InfoItem of a friend_check answer.
type CheckItem struct {
	To         string `json:"To_Account"`
	Relation   string `json:"Relation"`
	ResultCode int    `json:"ResultCode"`
	ResultInfo string `json:"ResultInfo"`
}

type friendCheckRequest struct {
	From      string   `json:"From_Account"`
	To        []string `json:"To_Account"`
	CheckType string   `json:"CheckType"`
}

type friendCheckAnswer struct {
	ActionStatus string      `json:"ActionStatus"`
	ErrorCode    int         `json:"ErrorCode"`
	ErrorInfo    string      `json:"ErrorInfo"`
	InfoItem     []CheckItem `json:"InfoItem"`
	FailAccount  []string    `json:"Fail_Account"`
}

// FriendCheck calls v4/sns/friend_check with CheckResult_Type_Both for
// from and at most MaxPerRequest accounts to. It returns the InfoItems of
// the answer; an item with a non-zero ResultCode is a failed check, not an
// answer. Error messages never hold the secret key or the UserSig.
func (c *Client) FriendCheck(ctx context.Context, from string, to []string) ([]CheckItem, error) {
	if len(to) == 0 || len(to) > MaxPerRequest {
		return nil, fmt.Errorf("friend_check takes 1 to %d accounts, not %d", MaxPerRequest, len(to))
	}
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	sig, err := c.userSig()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(friendCheckRequest{From: from, To: to, CheckType: "CheckResult_Type_Both"})
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("sdkappid", strconv.FormatUint(c.sdkAppID, 10))
	q.Set("identifier", c.identifier)
	q.Set("usersig", sig)
	q.Set("random", strconv.FormatUint(uint64(rand.Uint32()), 10))
	q.Set("contenttype", "json")
	target := c.endpoint + friendCheckPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building the friend_check request for %s: %w", target, scrub(err, sig))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message holds the URL, with the UserSig
		}
		return nil, fmt.Errorf("POST %s: %w", target, scrub(err, sig))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of POST %s: %w", target, scrub(err, sig))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s answered HTTP %d", target, resp.StatusCode)
	}
	var ans friendCheckAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("POST %s answered invalid JSON: %w", target, err)
	}
	if ans.ErrorCode != 0 || ans.ActionStatus != "OK" {
		return nil, &APIError{Code: ans.ErrorCode, Info: truncate(scrub(errors.New(ans.ErrorInfo), sig).Error(), 200)}
	}
	failed := make(map[string]bool, len(ans.FailAccount))
	for _, a := range ans.FailAccount {
		failed[a] = true
	}
	for i := range ans.InfoItem {
		if it := &ans.InfoItem[i]; failed[it.To] && it.ResultCode == 0 {
			// Listed in Fail_Account: a failed check whatever it says.
			it.ResultCode, it.ResultInfo = -1, "listed in Fail_Account"
		}
	}
	return ans.InfoItem, nil
}

// wait takes the call's turn from the rate limiter, or says when it comes
// if that is later than maxWait.
func (c *Client) wait(ctx context.Context) error {
	r := c.limiter.Reserve()
	d := r.Delay()
	if d > c.maxWait {
		r.Cancel()
		return &RateLimitedError{After: d}
	}
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// scrub removes the UserSig from an error's message, in case a transport
// quotes the request.
func scrub(err error, sig string) error {
	if sig == "" || !strings.Contains(err.Error(), sig) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), sig, "<usersig>"))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
