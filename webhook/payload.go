package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

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
	// invalid is set when the body is not a UTF-8 JSON object with each
	// member name once per object.
	invalid *rejection
	// command is set when the body's CallbackCommand is wrong or missing.
	command *rejection
	// pairs are PairList's pairs in the order received, each duplicate kept
	// once; pairsErr says what is wrong with PairList instead.
	pairs    []snsv1alpha1.FriendPair
	pairsErr *rejection
}

// parseBody reads a callback body in one streaming pass. Member names match
// exactly, as the protocol spells them; members the receiver does not know
// are skipped without being decoded.
//
// What a body costs is bounded by its bytes, whatever it holds: PairList is
// read an item at a time, and from the first item that fails a check (or
// the first pair past the limit) the rest of the list is only scanned. The
// whole body is still scanned to the end, since a body that is not valid
// JSON, or that names a member twice in one object, is refused before
// anything it says is looked at: a repeated name means different things to
// different decoders, and none of them is what the sender meant.
func parseBody(body []byte) payload {
	if !utf8.Valid(body) {
		// A decoder would quietly turn invalid UTF-8 into U+FFFD.
		return payload{invalid: errNotUTF8()}
	}
	if tooDeep(body) {
		return payload{invalid: errTooDeep()}
	}
	// Invalid bytes are refused above; allowing them here makes a lone
	// surrogate escape (\ud800) decode to U+FFFD, which the account check
	// then refuses by name.
	// A bytes.Buffer lets the decoder read the body in place: a long token
	// (a 1 MiB string, say) is not copied into a buffer of its own.
	r := bodyReader{dec: jsontext.NewDecoder(bytes.NewBuffer(body), jsontext.AllowInvalidUTF8(true))}
	if err := r.read(); err != nil {
		return payload{invalid: invalidJSON(err)}
	}
	return r.p
}

// bodyReader walks a body's tokens, filling p.
type bodyReader struct {
	dec *jsontext.Decoder
	p   payload
	// from, to and key are reused for every pair: the accounts unquoted,
	// and the two joined as the pair's key. A pair seen before costs no
	// allocation.
	from, to, key []byte
}

// errNotObject says the body is valid JSON but not an object.
var errNotObject = errors.New("not an object")

func (r *bodyReader) read() error {
	if r.dec.PeekKind() != '{' {
		if err := r.dec.SkipValue(); err != nil {
			return err
		}
		if err := r.end(); err != nil {
			return err
		}
		return errNotObject
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	var command jsontext.Value
	havePairs := false
	for r.dec.PeekKind() != '}' {
		name, err := r.dec.ReadToken()
		if err != nil {
			return err
		}
		switch name.String() {
		case "CallbackCommand":
			v, err := r.dec.ReadValue()
			if err != nil {
				return err
			}
			if len(v) > maxQuotedCommand {
				// Not the command, however it unquotes; not copied.
				command = jsontext.Value("null")
				continue
			}
			command = bytes.Clone(v)
		case "PairList":
			havePairs = true
			if err := r.pairList(); err != nil {
				return err
			}
		default:
			if err := r.dec.SkipValue(); err != nil {
				return err
			}
		}
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	if err := r.end(); err != nil {
		return err
	}
	r.p.command = commandProblem(command)
	if !havePairs {
		r.p.pairs, r.p.pairsErr = nil, errPairListMissing()
	}
	return nil
}

// end checks that nothing but white space follows the top-level value.
func (r *bodyReader) end() error {
	if _, err := r.dec.ReadToken(); err != io.EOF {
		if err == nil {
			err = errors.New("more than one top-level value")
		}
		return err
	}
	return nil
}

// pairList reads PairList's value. Problems with the list go to
// p.pairsErr; the error returned is the decoder's.
func (r *bodyReader) pairList() error {
	switch r.dec.PeekKind() {
	case 'n':
		_, err := r.dec.ReadToken()
		r.p.pairsErr = errPairListMissing()
		return err
	case '[':
	default:
		r.p.pairsErr = reject(http.StatusBadRequest, ReasonInvalidPairList, "PairList must be an array")
		return r.dec.SkipValue()
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	pairs := newPairSet()
	for i := 0; r.dec.PeekKind() != ']'; i++ {
		if pairs.err != nil {
			// Scan the rest without decoding it.
			if err := r.dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		if err := r.pair(i, pairs); err != nil {
			return err
		}
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	r.p.pairs, r.p.pairsErr = pairs.result()
	return nil
}

// pair reads PairList[i] into pairs, or records in pairs.err why it cannot.
// A pair seen before is only counted: its accounts passed the checks then.
func (r *bodyReader) pair(i int, pairs *pairSet) error {
	if r.dec.PeekKind() != '{' {
		pairs.err = notAnObject(i)
		return r.dec.SkipValue()
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	from, to := member{buf: r.from[:0]}, member{buf: r.to[:0]}
	for r.dec.PeekKind() != '}' {
		name, err := r.dec.ReadToken()
		if err != nil {
			return err
		}
		var m *member
		switch name.String() {
		case "From_Account":
			m = &from
		case "To_Account":
			m = &to
		default:
			if err := r.dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		if err := m.read(r.dec); err != nil {
			return err
		}
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return err
	}
	r.from, r.to = from.buf, to.buf
	if !from.usable() || !to.usable() {
		if _, rej := from.account(i, "From_Account"); rej != nil {
			pairs.err = rej
			return nil
		}
		_, pairs.err = to.account(i, "To_Account")
		return nil
	}
	// The key joins the accounts with a NUL, which no valid account holds,
	// so that a key seen before means the same two accounts.
	r.key = append(append(append(r.key[:0], from.buf...), 0), to.buf...)
	if pairs.seenBefore(r.key) {
		return nil
	}
	key := string(r.key)
	from.value, to.value = key[:len(from.buf)], key[len(from.buf)+1:]
	f, rej := from.account(i, "From_Account")
	if rej != nil {
		pairs.err = rej
		return nil
	}
	t, rej := to.account(i, "To_Account")
	if rej != nil {
		pairs.err = rej
		return nil
	}
	pairs.add(key, f, t)
	return nil
}

// member is an account member of a pair as read.
type member struct {
	present, isString bool
	// tooLong is set when the string is too long for an account even
	// before it is unquoted; it is then not unquoted.
	tooLong bool
	// buf is the string unquoted; value is it as a string, set only when
	// needed.
	buf   []byte
	value string
}

// maxQuotedAccount is the longest a quoted account can be and still unquote
// to at most MaxAccountBytes: each byte written as a six-byte \u escape,
// and the quotes. maxQuotedCommand is the same for CallbackCommand.
const (
	maxQuotedAccount = 6*MaxAccountBytes + 2
	maxQuotedCommand = 6*len(CallbackCommand) + 2
)

func (m *member) read(dec *jsontext.Decoder) error {
	m.present, m.isString, m.tooLong, m.buf = true, false, false, m.buf[:0]
	if dec.PeekKind() != '"' {
		return dec.SkipValue()
	}
	// The raw string, read in place; a long one is never copied.
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	m.isString = true
	if len(raw) > maxQuotedAccount {
		m.tooLong = true
		return nil
	}
	// The decoder has checked the string; the only error left is a lone
	// surrogate escape, which becomes U+FFFD, refused by the account check.
	m.buf, _ = jsontext.AppendUnquote(m.buf, raw)
	return nil
}

// usable reports whether the member is a string that may be an account,
// as far as can be told without looking at its characters.
func (m *member) usable() bool {
	return m.present && m.isString && !m.tooLong && len(m.buf) > 0 && len(m.buf) <= MaxAccountBytes
}

// account validates the account member key of PairList[i].
func (m *member) account(i int, key string) (string, *rejection) {
	bad := func(problem string) *rejection {
		return rejectf(http.StatusBadRequest, ReasonInvalidAccount, "PairList[%d].%s %s", i, key, problem)
	}
	switch {
	case !m.present:
		return "", bad("is missing")
	case !m.isString:
		return "", bad("must be a string")
	case m.tooLong:
		return "", bad(fmt.Sprintf("is longer than %d bytes", MaxAccountBytes))
	}
	if m.value == "" {
		m.value = string(m.buf)
	}
	if problem := accountProblem(m.value); problem != "" {
		return "", bad(problem)
	}
	return m.value, nil
}

// invalidJSON says why a body is not one the receiver reads.
func invalidJSON(err error) *rejection {
	switch {
	case errors.Is(err, errNotObject):
		return reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not a JSON object")
	case errors.Is(err, jsontext.ErrDuplicateName):
		return reject(http.StatusBadRequest, ReasonDuplicateMember, "body names a member twice in one object")
	}
	return reject(http.StatusBadRequest, ReasonInvalidJSON, "body is not valid JSON")
}

// maxBodyDepth is how many arrays and objects a body may have open at once.
// A callback needs three (the body, PairList, a pair); the decoder keeps
// state for each open level, which a body of a million brackets would
// otherwise make cost several times its size.
const maxBodyDepth = 32

// tooDeep reports whether body opens more than maxBodyDepth arrays and
// objects at once, counting brackets outside string literals. It looks at
// the bytes only, before the body is decoded, so that a too deep body is
// refused whatever else is wrong with it.
func tooDeep(body []byte) bool {
	depth, inString, escaped := 0, false, false
	for _, c := range body {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			if depth++; depth > maxBodyDepth {
				return true
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return false
}

func errTooDeep() *rejection {
	return rejectf(http.StatusBadRequest, ReasonInvalidJSON, "body nests arrays and objects more than %d deep", maxBodyDepth)
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

// commandProblem checks the body's CallbackCommand, as read (nil when the
// body has none).
func commandProblem(raw jsontext.Value) *rejection {
	if raw.Kind() != '"' {
		return reject(http.StatusBadRequest, ReasonCommandMismatch, "CallbackCommand in the body must be "+CallbackCommand)
	}
	tok, err := jsontext.NewDecoder(bytes.NewReader(raw), jsontext.AllowInvalidUTF8(true)).ReadToken()
	if err != nil || tok.String() != CallbackCommand {
		return reject(http.StatusBadRequest, ReasonCommandMismatch, "CallbackCommand in the body must be "+CallbackCommand)
	}
	return nil
}

// pairSet collects pairs in order, each once, and stops at the first
// problem: a bad item, or one distinct pair past the limit.
type pairSet struct {
	pairs []snsv1alpha1.FriendPair
	// seen holds the key of each pair added: its accounts joined by a NUL.
	seen map[string]struct{}
	err  *rejection
	n    int
}

func newPairSet() *pairSet {
	return &pairSet{seen: map[string]struct{}{}}
}

// seenBefore counts a pair whose key is already in the set and reports
// whether it was; the lookup does not allocate.
func (s *pairSet) seenBefore(key []byte) bool {
	if _, dup := s.seen[string(key)]; dup {
		s.n++
		return true
	}
	return false
}

// add adds a pair not seen before, under its key; past MaxPairs distinct
// pairs it sets err instead.
func (s *pairSet) add(key, from, to string) {
	s.n++
	if len(s.pairs) == snsv1alpha1.MaxPairs {
		s.err = rejectf(http.StatusBadRequest, ReasonInvalidPairList, "PairList has more than %d distinct pairs", snsv1alpha1.MaxPairs)
		return
	}
	s.seen[key] = struct{}{}
	s.pairs = append(s.pairs, snsv1alpha1.FriendPair{From: from, To: to})
}

func (s *pairSet) result() ([]snsv1alpha1.FriendPair, *rejection) {
	switch {
	case s.err != nil:
		return nil, s.err
	case s.n == 0:
		return nil, errPairListEmpty()
	}
	return s.pairs, nil
}

// accountProblem says what is wrong with an account id, or "" when nothing
// is. An account is 1 to MaxAccountBytes bytes of visible characters:
// letters, marks, digits, punctuation and symbols, with spaces only between
// them. Refused are what a terminal does not show or shows elsewhere:
// control, format (zero-width and bidirectional marks among them), line and
// paragraph separators, spaces other than U+0020, default-ignorable code
// points (variation selectors, Hangul fillers), private-use code points,
// noncharacters and unassigned code points, so that the FROM and TO of
// kubectl get fdel show what the account is. U+FFFD is refused as invalid UTF-8: it is what a lone
// surrogate escape such as \ud800 decodes to.
func accountProblem(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > MaxAccountBytes {
		return fmt.Sprintf("is longer than %d bytes", MaxAccountBytes)
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return "starts or ends with a space"
	}
	for _, r := range s {
		if r == utf8.RuneError {
			return "is not valid UTF-8"
		}
		if problem := runeProblem(r); problem != "" {
			return fmt.Sprintf("contains %s (U+%04X)", problem, r)
		}
	}
	return ""
}

// runeProblem names the class of character r belongs to when an account may
// not hold it.
func runeProblem(r rune) string {
	switch {
	case r == ' ':
		return ""
	case unicode.IsControl(r):
		return "a control character"
	case unicode.Is(unicode.Cf, r):
		return "an invisible format character"
	case unicode.In(r, unicode.Zl, unicode.Zp):
		return "a line or paragraph separator"
	case unicode.Is(unicode.Zs, r), unicode.Is(unicode.White_Space, r):
		return "a space other than U+0020"
	case unicode.In(r, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point):
		return "an invisible character"
	case unicode.Is(unicode.Co, r):
		return "a private-use character"
	case unicode.Is(unicode.Noncharacter_Code_Point, r):
		return "a noncharacter"
	case !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S):
		// Every category but these is refused above, so this is Cn: a code
		// point no character is assigned to (in Go's unicode.Version), which
		// a terminal shows as a box or nothing, and which may mean something
		// else once assigned.
		return "an unassigned code point"
	}
	return ""
}
