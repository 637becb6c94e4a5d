package controllers

import (
	"fmt"
	"k8s.io/apimachinery/pkg/types"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestHTTPAnswer(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name       string
		code       int
		h          http.Header
		wantErr    string // "" for success
		final      bool
		retryAfter time.Duration
	}{
		{"200 succeeds", 200, nil, "", false, 0},
		{"204 succeeds", 204, nil, "", false, 0},
		{"302 is not followed and fails", 302, hdr("Location", "https://other.example.com/x?token=s3cret"),
			"POST returned 302 Found (Location https://other.example.com/x); redirects are not followed", true, 0},
		{"303 fails", 303, nil, "(no Location); redirects are not followed", true, 0},
		{"307 fails", 307, hdr("Location", "/elsewhere"), "redirects are not followed", true, 0},
		{"308 fails", 308, hdr("Location", "https://other.example.com/"), "redirects are not followed", true, 0},
		{"400 fails at once", 400, nil, "POST returned 400 Bad Request: body", true, 0},
		{"401 fails at once", 401, nil, "401", true, 0},
		{"404 fails at once", 404, nil, "404", true, 0},
		{"409 fails at once", 409, nil, "409", true, 0},
		{"408 is retried", 408, nil, "408", false, 0},
		{"429 is retried", 429, nil, "429", false, 0},
		{"429 with Retry-After seconds", 429, hdr("Retry-After", "120"), "429", false, 2 * time.Minute},
		{"503 with Retry-After date", 503, hdr("Retry-After", "Fri, 27 Nov 2026 12:10:00 GMT"), "503", false, 10 * time.Minute},
		{"503 with Retry-After in the past", 503, hdr("Retry-After", "Fri, 27 Nov 2026 11:00:00 GMT"), "503", false, 0},
		{"503 with unreadable Retry-After", 503, hdr("Retry-After", "soon"), "503", false, 0},
		{"503 with negative Retry-After", 503, hdr("Retry-After", "-5"), "503", false, 0},
		{"500 is retried", 500, nil, "500", false, 0},
		{"400 ignores Retry-After", 400, hdr("Retry-After", "120"), "400", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			res := httpAnswer(tc.code, statusLine(tc.code), tc.h, "body", now)
			if tc.wantErr == "" {
				g.Expect(res.err).NotTo(HaveOccurred())
				return
			}
			g.Expect(res.err).To(MatchError(ContainSubstring(tc.wantErr)))
			g.Expect(res.final).To(Equal(tc.final))
			g.Expect(res.retryAfter).To(Equal(tc.retryAfter))
		})
	}
}

func statusLine(code int) string { return fmt.Sprintf("%d %s", code, http.StatusText(code)) }

func TestNextAttemptWait(t *testing.T) {
	o := Options{HTTPBackoffBase: time.Second, HTTPBackoffMax: 10 * time.Second, HTTPRetryAfterMax: time.Minute}
	for _, tc := range []struct {
		attempt    int32
		retryAfter time.Duration
		want       time.Duration
	}{
		{1, 0, time.Second},                     // backoff alone
		{3, time.Second, 4 * time.Second},       // backoff is longer
		{1, 30 * time.Second, 30 * time.Second}, // Retry-After is longer
		{1, time.Hour, time.Minute},             // Retry-After capped
		{20, time.Hour, time.Minute},
	} {
		NewWithT(t).Expect(nextAttemptWait(tc.attempt, tc.retryAfter, o, 0)).To(Equal(tc.want), "attempt %d retryAfter %s", tc.attempt, tc.retryAfter)
	}
}

func TestHTTPSendsBoundPerConfig(t *testing.T) {
	g := NewWithT(t)
	s := &httpSends{limit: 2, steps: map[string]time.Time{}, perConfig: map[string]int{},
		waiting: map[string][]types.NamespacedName{}, queued: map[types.NamespacedName]bool{}}
	d := time.Now()
	fd := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }
	g.Expect(s.start("uid1/a", "ns/app", d, fd("fd1"))).To(BeTrue())
	g.Expect(s.start("uid1/a", "ns/app", d, fd("fd1"))).To(BeFalse(), "the same step is in flight")
	g.Expect(s.start("uid2/a", "ns/app", d, fd("fd2"))).To(BeTrue())
	g.Expect(s.start("uid3/a", "ns/app", d, fd("fd3"))).To(BeFalse(), "the config has no slot left")
	g.Expect(s.start("uid5/a", "ns/app", d, fd("fd5"))).To(BeFalse())
	g.Expect(s.start("uid3/a", "ns/app", d, fd("fd3"))).To(BeFalse(), "asking again keeps its place in line")
	g.Expect(s.start("uid4/a", "ns/other", d, fd("fd4"))).To(BeTrue(), "another config has its own slots")
	_, ok := s.sending("uid1/a")
	g.Expect(ok).To(BeTrue())
	next, ok := s.done("uid1/a", "ns/app")
	g.Expect(ok).To(BeTrue())
	g.Expect(next).To(Equal(fd("fd3")), "the first in line is woken")
	_, ok = s.sending("uid1/a")
	g.Expect(ok).To(BeFalse())
	g.Expect(s.start("uid3/a", "ns/app", d, fd("fd3"))).To(BeTrue())
	next, ok = s.done("uid2/a", "ns/app")
	g.Expect(ok).To(BeTrue())
	g.Expect(next).To(Equal(fd("fd5")))
	_, ok = s.done("uid3/a", "ns/app")
	g.Expect(ok).To(BeFalse(), "nobody left in line")
}
