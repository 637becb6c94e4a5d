package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"unicode"
	"unicode/utf8"

	k8sjson "sigs.k8s.io/json"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// CallbackCommand is the only command the receiver accepts, in the query
// string and in the body.
const CallbackCommand = "Sns.CallbackFriendDelete"

// MaxAccountBytes is the longest From_Account or To_Account accepted.
const MaxAccountBytes = 128

// payload is what the body says, checked. The rules report its problems in
// order: invalid first, then command, then pairsErr (the query's
// CallbackCommand is checked between command and pairsErr).
type payload struct {
	// invalid is set when the body is not a UTF-8 JSON object.
	invalid *rejection
	// command is set when the body's CallbackCommand is wrong or missing.
	command *rejection
	// pairs are PairList's pairs in the order received, each duplicate kept
	// once; pairsErr says what is wrong with PairList instead.
	pairs    []snsv1alpha1.FriendPair
	pairsErr *rejection
}

// parseBody reads a callback body. Member names match exactly, as the
// protocol spells them; members the receiver does not know are ignored.
//
// Bodies that decode into the protocol's shape take a fast typed path; any
// other takes the generic path, which says precisely what is wrong. Both
// give the same answer for every body (FuzzCheck compares them).
func parseBody(body []byte) payload {
	if p, ok := parseBodyTyped(body); ok {
		return p
	}
	return parseBodyGeneric(body)
}

// wireBody and wirePair are the protocol's body, decoded case-sensitively.
type wireBody struct {
	CallbackCommand json.RawMessage `json:"CallbackCommand"`
	PairList        []*wirePair     `json:"PairList"`
}

type wirePair struct {
	From json.RawMessage `json:"From_Account"`
	To   json.RawMessage `json:"To_Account"`
}

// parseBodyTyped decodes the body in one pass into wireBody. It gives up
// (false) on anything that does not decode into it, leaving the generic path
// to name the problem.
func parseBodyTyped(body []byte) (payload, bool) {
	if !utf8.Valid(body) {
		return payload{invalid: errNotUTF8()}, true
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return payload{}, false
	}
	var w wireBody
	if err := k8sjson.UnmarshalCaseSensitivePreserveInts(body, &w); err != nil {
		return payload{}, false
	}
	p := payload{command: commandProblem(w.CallbackCommand, w.CallbackCommand != nil)}
	switch {
	case w.PairList == nil:
		p.pairsErr = errPairListMissing()
		return p, true
	case len(w.PairList) == 0:
		p.pairsErr = errPairListEmpty()
		return p, true
	}
	pairs := newPairSet(len(w.PairList))
	for i, item := range w.PairList {
		if item == nil {
			p.pairsErr = notAnObject(i)
			return p, true
		}
		from, rej := account(item.From, item.From != nil, i, "From_Account")
		if rej != nil {
			p.pairsErr = rej
			return p, true
		}
		to, rej := account(item.To, item.To != nil, i, "To_Account")
		if rej != nil {
			p.pairsErr = rej
			return p, true
		}
		pairs.add(from, to)
	}
	p.pairs, p.pairsErr = pairs.result()
	return p, true
}

// parseBodyGeneric reads the body member by member, so that it can say which
// member is wrong and how.
func parseBodyGeneric(body []byte) payload {
	if !utf8.Valid(body) {
		// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
		return payload{invalid: errNotUTF8()}
	}
	if !json.Valid(body) {
		return payload{invalid: reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not valid JSON")}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return payload{invalid: reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not a JSON object")}
	}
	cmd, haveCmd := top["CallbackCommand"]
	p := payload{command: commandProblem(cmd, haveCmd)}
	p.pairs, p.pairsErr = genericPairs(top["PairList"])
	return p
}

func genericPairs(raw json.RawMessage) ([]snsv1alpha1.FriendPair, *rejection) {
	if raw == nil || string(raw) == "null" {
		return nil, errPairListMissing()
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList must be an array")
	}
	if len(items) == 0 {
		return nil, errPairListEmpty()
	}
	pairs := newPairSet(len(items))
	for i, item := range items {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(item, &members); err != nil || members == nil {
			return nil, notAnObject(i)
		}
		fromRaw, haveFrom := members["From_Account"]
		from, rej := account(fromRaw, haveFrom, i, "From_Account")
		if rej != nil {
			return nil, rej
		}
		toRaw, haveTo := members["To_Account"]
		to, rej := account(toRaw, haveTo, i, "To_Account")
		if rej != nil {
			return nil, rej
		}
		pairs.add(from, to)
	}
	return pairs.result()
}

func errNotUTF8() *rejection {
	return reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not valid UTF-8")
}

func errPairListMissing() *rejection {
	return reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList is missing")
}

func errPairListEmpty() *rejection {
	return reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList is empty")
}

func notAnObject(i int) *rejection {
	return rejectf(http.StatusBadRequest, ReasonInvalidPairList, "PairList[%d] must be an object", i)
}

// commandProblem checks the body's CallbackCommand.
func commandProblem(raw json.RawMessage, present bool) *rejection {
	if cmd, ok := jsonString(raw); !present || !ok || cmd != CallbackCommand {
		return reject(http.StatusBadRequest, ReasonCommandMismatch, "CallbackCommand in the body must be "+CallbackCommand)
	}
	return nil
}

// pairSet collects pairs in order, each once.
type pairSet struct {
	pairs []snsv1alpha1.FriendPair
	seen  map[snsv1alpha1.FriendPair]struct{}
}

func newPairSet(n int) *pairSet {
	return &pairSet{pairs: make([]snsv1alpha1.FriendPair, 0, n), seen: make(map[snsv1alpha1.FriendPair]struct{}, n)}
}

func (s *pairSet) add(from, to string) {
	p := snsv1alpha1.FriendPair{From: from, To: to}
	if _, dup := s.seen[p]; !dup {
		s.seen[p] = struct{}{}
		s.pairs = append(s.pairs, p)
	}
}

func (s *pairSet) result() ([]snsv1alpha1.FriendPair, *rejection) {
	if len(s.pairs) > snsv1alpha1.MaxPairs {
		return nil, rejectf(http.StatusBadRequest, ReasonInvalidPairList, "PairList has more than %d distinct pairs", snsv1alpha1.MaxPairs)
	}
	return s.pairs, nil
}

// account reads and validates the account member key of PairList[i].
func account(raw json.RawMessage, present bool, i int, key string) (string, *rejection) {
	bad := func(problem string) *rejection {
		return rejectf(http.StatusBadRequest, ReasonInvalidAccount, "PairList[%d].%s %s", i, key, problem)
	}
	if !present {
		return "", bad("is missing")
	}
	s, ok := jsonString(raw)
	if !ok {
		return "", bad("must be a string")
	}
	if problem := accountProblem(s); problem != "" {
		return "", bad(problem)
	}
	return s, nil
}

// jsonString returns the string a raw JSON value holds, if it is one. The
// value has been through a JSON decoder, so it is well formed.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true // nothing to unescape
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
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
