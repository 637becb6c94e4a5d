package imrest

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// UserSig computes a TLSSigAPIv2 UserSig: the HMAC-SHA256, keyed with the
// app's secret key, of
//
//	TLS.identifier:<identifier>\nTLS.sdkappid:<sdkappid>\nTLS.time:<unix>\nTLS.expire:<seconds>\n
//
// placed with those fields and TLS.ver "2.0" in a JSON document, which is
// zlib-compressed and base64-encoded with Tencent's URL-safe alphabet
// (+ as *, / as -, = as _).
func UserSig(sdkAppID uint64, identifier string, secretKey []byte, issued time.Time, expire time.Duration) (string, error) {
	t := issued.Unix()
	exp := int64(expire / time.Second)
	mac := hmac.New(sha256.New, secretKey)
	fmt.Fprintf(mac, "TLS.identifier:%s\nTLS.sdkappid:%d\nTLS.time:%d\nTLS.expire:%d\n", identifier, sdkAppID, t, exp)
	doc, err := json.Marshal(struct {
		Ver        string `json:"TLS.ver"`
		Identifier string `json:"TLS.identifier"`
		SDKAppID   uint64 `json:"TLS.sdkappid"`
		Expire     int64  `json:"TLS.expire"`
		Time       int64  `json:"TLS.time"`
		Sig        string `json:"TLS.sig"`
	}{"2.0", identifier, sdkAppID, exp, t, base64.StdEncoding.EncodeToString(mac.Sum(nil))})
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	if _, err := w.Write(doc); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return sigEncoding.Replace(base64.StdEncoding.EncodeToString(buf.Bytes())), nil
}

// sigEncoding turns standard base64 into Tencent's variant.
var sigEncoding = strings.NewReplacer("+", "*", "/", "-", "=", "_")

// ParseSDKAppID parses a CallbackConfig's sdkAppID.
func ParseSDKAppID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sdkAppID %q is not a number", s)
	}
	return id, nil
}
