package webhook

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strconv"
	"time"
)

// sign is the callback signature: lowercase hex of SHA-256 over the token
// followed by RequestTime, with no separator.
func sign(token, requestTime string) string {
	sum := sha256.Sum256([]byte(token + requestTime))
	return hex.EncodeToString(sum[:])
}

// signMatches compares a callback's Sign with the expected one in constant
// time. Only lowercase hex matches, as the protocol specifies.
func signMatches(token, requestTime, got string) bool {
	want := sign(token, requestTime)
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// parseRequestTime reads RequestTime: Unix seconds in decimal digits only.
func parseRequestTime(s string) (time.Time, bool) {
	if s == "" || len(s) > 19 {
		return time.Time{}, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, false
		}
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}

// withinSkew reports whether t is at most skew away from now, either way.
func withinSkew(t, now time.Time, skew time.Duration) bool {
	d := now.Sub(t)
	return d <= skew && d >= -skew
}

// wellFormedSign reports whether s can be a Sign at all: 64 lowercase hex
// digits. One that cannot is refused without reading the token.
func wellFormedSign(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
