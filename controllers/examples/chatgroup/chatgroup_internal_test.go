package chatgroup

import (
	"testing"
	"time"
)

func TestNextPair(t *testing.T) {
	cases := []struct {
		cp   string
		n    int
		want int
	}{
		{"", 10, 0},
		{"next=0", 10, 0},
		{"next=7", 10, 7},
		{"next=10", 10, 10},
		{"next=99", 10, 10},
		{"next=-1", 10, 0},
		{"next=x", 10, 0},
		{"7", 10, 0},
	}
	for _, tc := range cases {
		if got := nextPair(tc.cp, tc.n); got != tc.want {
			t.Errorf("nextPair(%q, %d) = %d, want %d", tc.cp, tc.n, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempts, want := range map[int32]time.Duration{0: time.Second, 1: 2 * time.Second, 5: 32 * time.Second, 8: 256 * time.Second, 9: maxBackoff, 100: maxBackoff} {
		if got := backoff(attempts); got != want {
			t.Errorf("backoff(%d) = %s, want %s", attempts, got, want)
		}
	}
}
