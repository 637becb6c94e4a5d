package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sender sends signed Sns.CallbackFriendDelete callbacks to the receiver,
// as the IM backend does: query SdkAppid, CallbackCommand, contenttype,
// ClientIP, OptPlatform, RequestTime and Sign = hex(sha256(token +
// RequestTime)).
type sender struct {
	base   string
	client *http.Client
}

func newSender(base string, conns int) *sender {
	return &sender{base: base, client: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
		},
	}}
}

// answer is what the receiver said.
type answer struct {
	status int
	ok     bool
	info   string
	err    error
}

// send sends one callback with one pair; sign replaces the computed Sign
// when not empty.
func (s *sender) send(ctx context.Context, requestTime int64, from, to, sign string) answer {
	if requestTime == 0 {
		requestTime = time.Now().Unix()
	}
	rt := strconv.FormatInt(requestTime, 10)
	if sign == "" {
		sum := sha256.Sum256([]byte(token + rt))
		sign = hex.EncodeToString(sum[:])
	}
	q := url.Values{}
	q.Set("SdkAppid", sdkAppID)
	q.Set("CallbackCommand", "Sns.CallbackFriendDelete")
	q.Set("contenttype", "json")
	q.Set("ClientIP", "127.0.0.1")
	q.Set("OptPlatform", "RESTAPI")
	q.Set("RequestTime", rt)
	q.Set("Sign", sign)
	body, err := json.Marshal(map[string]any{
		"CallbackCommand": "Sns.CallbackFriendDelete",
		"PairList":        []map[string]string{{"From_Account": from, "To_Account": to}},
	})
	if err != nil {
		return answer{err: err}
	}
	u := fmt.Sprintf("%s/callbacks/%s/%s?%s", s.base, namespace, configName, q.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return answer{status: resp.StatusCode, err: err}
	}
	var a struct {
		ActionStatus string
		ErrorCode    int
		ErrorInfo    string
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return answer{status: resp.StatusCode, err: fmt.Errorf("answered %s with a body that is not JSON: %q", resp.Status, raw)}
	}
	return answer{status: resp.StatusCode, ok: resp.StatusCode == http.StatusOK && a.ActionStatus == "OK" && a.ErrorCode == 0, info: a.ErrorInfo}
}

// sendStats is what a burst of callbacks got.
type sendStats struct {
	sent, ok, fail atomic.Int64
	// late counts callbacks that left more than a second behind schedule
	// because -concurrency were in flight.
	late    atomic.Int64
	mu      sync.Mutex
	reasons map[string]int
	first   time.Time
	last    time.Time
}

func (st *sendStats) failed(why string) {
	st.fail.Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.reasons == nil {
		st.reasons = map[string]int{}
	}
	if len(st.reasons) < 20 {
		st.reasons[why]++
	}
}

// burst sends n callbacks at rate per second from st.first on, at most conc
// in flight, one distinct pair each, and returns once all are answered.
func (s *sender) burst(ctx context.Context, n int, rate float64, conc int, st *sendStats) {
	slots := make(chan struct{}, conc)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; i < n; i++ {
		due := st.first.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		select {
		case <-ctx.Done():
			return
		case slots <- struct{}{}:
		}
		if time.Since(due) > time.Second {
			st.late.Add(1)
		}
		wg.Add(1)
		st.sent.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			a := s.send(ctx, 0, fmt.Sprintf("user_%06d", i), fmt.Sprintf("friend_%06d", i), "")
			switch {
			case a.err != nil:
				st.failed(a.err.Error())
			case !a.ok:
				st.failed(fmt.Sprintf("%d %s", a.status, a.info))
			default:
				st.ok.Add(1)
			}
		}(i)
	}
	wg.Wait()
	st.last = time.Now()
}

// sink is the http step's endpoint: it answers 200 and counts requests and
// distinct Idempotency-Keys.
type sink struct {
	url      string
	srv      *http.Server
	requests atomic.Int64
	mu       sync.Mutex
	keys     map[string]struct{}
}

func startSink() (*sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{url: "http://" + l.Addr().String(), keys: map[string]struct{}{}}
	s.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.mu.Lock()
		s.keys[r.Header.Get("Idempotency-Key")] = struct{}{}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}\n"))
	})}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// distinct is how many different Idempotency-Keys (FriendDeletion and
// step) the sink saw.
func (s *sink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

func (s *sink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
