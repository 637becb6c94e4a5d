package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"unicode"
	"unicode/utf8"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// CallbackCommand is the only command the receiver accepts, in the query
// string and in the body.
const CallbackCommand = "Sns.CallbackFriendDelete"

// MaxAccountBytes is the longest From_Account or To_Account accepted.
const MaxAccountBytes = 128

// decodeBody reads the body as a JSON object, keeping each member's raw
// value. Member names match exactly, as the protocol spells them; members
// the receiver does not know are ignored.
func decodeBody(body []byte) (map[string]json.RawMessage, *rejection) {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(body) {
		return nil, reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not valid UTF-8")
	}
	if !json.Valid(body) {
		return nil, reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not valid JSON")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not a JSON object")
	}
	return top, nil
}

// bodyCommand checks the body's CallbackCommand.
func bodyCommand(top map[string]json.RawMessage) *rejection {
	var cmd string
	if raw, ok := top["CallbackCommand"]; !ok || !isJSONString(raw) || json.Unmarshal(raw, &cmd) != nil || cmd != CallbackCommand {
		return reject(http.StatusBadRequest, ReasonCommandMismatch, "CallbackCommand in the body must be "+CallbackCommand)
	}
	return nil
}

// parsePairs validates PairList and returns its pairs in the order received,
// each duplicate kept once.
func parsePairs(raw json.RawMessage, haveIt bool) ([]snsv1alpha1.FriendPair, *rejection) {
	if !haveIt || string(raw) == "null" {
		return nil, reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList is missing")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList must be an array")
	}
	if len(items) == 0 {
		return nil, reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList is empty")
	}
	pairs := make([]snsv1alpha1.FriendPair, 0, len(items))
	seen := make(map[snsv1alpha1.FriendPair]struct{}, len(items))
	for i, item := range items {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(item, &members); err != nil || members == nil {
			return nil, rejectf(http.StatusBadRequest, ReasonInvalidPairList, "PairList[%d] must be an object", i)
		}
		from, rej := account(members, i, "From_Account")
		if rej != nil {
			return nil, rej
		}
		to, rej := account(members, i, "To_Account")
		if rej != nil {
			return nil, rej
		}
		p := snsv1alpha1.FriendPair{From: from, To: to}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		pairs = append(pairs, p)
	}
	if len(pairs) > snsv1alpha1.MaxPairs {
		return nil, rejectf(http.StatusBadRequest, ReasonInvalidPairList, "PairList has more than %d distinct pairs", snsv1alpha1.MaxPairs)
	}
	return pairs, nil
}

// account reads and validates one account member of PairList[i].
func account(members map[string]json.RawMessage, i int, key string) (string, *rejection) {
	bad := func(problem string) *rejection {
		return rejectf(http.StatusBadRequest, ReasonInvalidAccount, "PairList[%d].%s %s", i, key, problem)
	}
	raw, ok := members[key]
	if !ok {
		return "", bad("is missing")
	}
	var s string
	if !isJSONString(raw) || json.Unmarshal(raw, &s) != nil {
		return "", bad("must be a string")
	}
	if problem := accountProblem(s); problem != "" {
		return "", bad(problem)
	}
	return s, nil
}

// accountProblem says what is wrong with an account id, or "" when nothing
// is. U+FFFD is refused as invalid UTF-8: it is what a lone surrogate escape
// such as \ud800 decodes to.
func accountProblem(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > MaxAccountBytes {
		return fmt.Sprintf("is longer than %d bytes", MaxAccountBytes)
	}
	for _, r := range s {
		if r == utf8.RuneError {
			return "is not valid UTF-8"
		}
		if unicode.IsControl(r) {
			return "contains a control character"
		}
	}
	return ""
}

func isJSONString(raw json.RawMessage) bool {
	return len(raw) >= 2 && raw[0] == '"'
}
