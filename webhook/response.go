package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Reasons name why a callback was answered as it was. They label the
// callbacks metric and the log line of each rejected callback, so the set is
// fixed.
const (
	ReasonAccepted            = "Accepted"
	ReasonUnknownPath         = "UnknownPath"
	ReasonConfigNotFound      = "ConfigNotFound"
	ReasonConfigUnavailable   = "ConfigUnavailable"
	ReasonSuspended           = "Suspended"
	ReasonSourceNotAllowed    = "SourceNotAllowed"
	ReasonMethodNotAllowed    = "MethodNotAllowed"
	ReasonSDKAppIDMismatch    = "SDKAppIDMismatch"
	ReasonTokenUnavailable    = "TokenUnavailable"
	ReasonSignMissing         = "SignMissing"
	ReasonRequestTimeInvalid  = "RequestTimeInvalid"
	ReasonSignMismatch        = "SignMismatch"
	ReasonRequestTimeSkew     = "RequestTimeSkew"
	ReasonContentType         = "ContentType"
	ReasonBodyTooLarge        = "BodyTooLarge"
	ReasonBodyUnreadable      = "BodyUnreadable"
	ReasonInvalidJSON         = "InvalidJSON"
	ReasonCommandMismatch     = "CommandMismatch"
	ReasonInvalidPairList     = "InvalidPairList"
	ReasonInvalidAccount      = "InvalidAccount"
	ReasonDuplicateMember     = "DuplicateMember"
	ReasonInvalidQuery        = "InvalidQuery"
	ReasonBusy                = "Busy"
	ReasonObjectTooLarge      = "ObjectTooLarge"
	ReasonStoreFailed         = "StoreFailed"
	ReasonStoreTimeout        = "StoreTimeout"
	ReasonRejectedByAPIServer = "RejectedByAPIServer"
	ReasonSpoolFull           = "SpoolFull"
	ReasonSpoolFailed         = "SpoolFailed"
)

// rejection is a callback answered FAIL: the HTTP status, the metric and log
// reason, and the ErrorInfo the caller reads. ErrorInfo names the rule that
// failed; it never carries a secret or a piece of the request.
type rejection struct {
	status int
	reason string
	info   string
	// cause is the error behind it, for the log line only.
	cause error
}

func (r *rejection) Error() string {
	return fmt.Sprintf("%d %s: %s", r.status, r.reason, r.info)
}

func reject(status int, reason, info string) *rejection {
	return &rejection{status: status, reason: reason, info: info}
}

func withCause(rej *rejection, err error) *rejection {
	rej.cause = err
	return rej
}

func rejectf(status int, reason, format string, args ...any) *rejection {
	return &rejection{status: status, reason: reason, info: fmt.Sprintf(format, args...)}
}

// answer is the protocol's response body.
type answer struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
}

// okBody is the success answer, byte for byte as the protocol page shows it
// without the whitespace.
var okBody = mustMarshal(answer{ActionStatus: "OK", ErrorCode: 0, ErrorInfo: ""})

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func writeOK(w http.ResponseWriter) {
	writeBody(w, http.StatusOK, okBody)
}

func writeRejection(w http.ResponseWriter, rej *rejection) {
	switch rej.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case http.StatusRequestEntityTooLarge:
		// The rest of the body is not read; do not reuse the connection.
		w.Header().Set("Connection", "close")
	}
	writeBody(w, rej.status, mustMarshal(answer{ActionStatus: "FAIL", ErrorCode: 1, ErrorInfo: rej.info}))
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
