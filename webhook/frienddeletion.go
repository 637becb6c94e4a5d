package webhook

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Lengths the FriendDeletion API allows for the free-form query parameters.
const (
	maxClientIPBytes    = 64
	maxOptPlatformBytes = 32
	maxRequestIDBytes   = 128
)

// NamePrefix starts the name of every FriendDeletion the receiver creates.
const NamePrefix = "fd-"

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// friendDeletionName is the deterministic name of the FriendDeletion for a
// callback: a hash of the config's UID, the sorted pairs, and what tells one
// deletion from a redelivery of it. A redelivered callback gets the same
// name, so storing it again finds the first object; the same pairs deleted
// again later get another.
//
// What tells them apart, by what the callback carries:
//   - signed: RequestTime, which the Sign covers, and the request id when
//     there is one. The unsigned id cannot replace the signed time, so a
//     sender who knows a signed URL cannot choose the name of a deletion
//     that is yet to come.
//   - unsigned, with a request id: the id; else RequestTime when present.
//   - neither: the body's hash and the second the callback arrived, so a
//     redelivery collapses only when it arrives within the same second.
//
// The name is "fd-" and 120 bits of the hash in base32: 27 characters.
func friendDeletionName(configUID types.UID, cb *callback, receivedAt time.Time) string {
	h := sha256.New()
	field(h, "config", string(configUID))
	sorted := slices.Clone(cb.pairs)
	slices.SortFunc(sorted, func(a, b snsv1alpha1.FriendPair) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
	})
	field(h, "pairs", strconv.Itoa(len(sorted)))
	for _, p := range sorted {
		field(h, "from", p.From)
		field(h, "to", p.To)
	}
	switch {
	case cb.signed:
		field(h, "requestTime", cb.requestTime)
		if cb.requestID != "" {
			field(h, "requestID", cb.requestID)
		}
	case cb.requestID != "":
		field(h, "requestID", cb.requestID)
	case cb.requestTime != "":
		field(h, "requestTime", cb.requestTime)
	default:
		field(h, "body", string(cb.bodyHash[:]))
		field(h, "second", strconv.FormatInt(receivedAt.Unix(), 10))
	}
	sum := h.Sum(nil)
	return NamePrefix + nameEncoding.EncodeToString(sum[:15])
}

// field writes a tagged, length-prefixed value, so that no two different
// sequences of values hash alike.
func field(h hash.Hash, tag, value string) {
	var n [binary.MaxVarintLen64]byte
	h.Write([]byte(tag))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(value)))])
	h.Write([]byte(value))
}

// newFriendDeletion builds the object that records an accepted callback.
func newFriendDeletion(cfg *snsv1alpha1.CallbackConfig, cb *callback, receivedAt time.Time) *snsv1alpha1.FriendDeletion {
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{
			Name:      friendDeletionName(cfg.UID, cb, receivedAt),
			Namespace: cfg.Namespace,
			Labels: map[string]string{
				snsv1alpha1.LabelConfig:   configLabelValue(cfg.Name),
				snsv1alpha1.LabelSDKAppID: cfg.Spec.SDKAppID,
				snsv1alpha1.LabelFromHash: snsv1alpha1.FromAccountHash(cb.pairs[0].From),
			},
		},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName:  cfg.Name,
			SDKAppID:    cfg.Spec.SDKAppID,
			Pairs:       cb.pairs,
			PairCount:   int32(len(cb.pairs)),
			ClientIP:    cleanParam(cb.clientIP, maxClientIPBytes),
			OptPlatform: cleanParam(cb.optPlatform, maxOptPlatformBytes),
			ReceivedAt:  metav1.NewTime(receivedAt.UTC().Truncate(time.Second)),
		},
	}
	// A request id that the API would refuse still names the object, but is
	// not recorded: losing the callback over it would be worse.
	if id := cb.requestID; id != "" && cleanParam(id, maxRequestIDBytes) == id {
		fd.Spec.RequestID = id
	}
	return fd
}

// cleanParam makes a free-form query parameter storable: valid UTF-8 without
// control characters, cut to at most max bytes on a character boundary.
func cleanParam(s string, max int) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// configLabelValue is the LabelConfig value for a config name. Names longer
// than a label value allows (63 characters) are cut and given a hash suffix,
// so the label stays unique and valid.
func configLabelValue(name string) string {
	if len(validation.IsValidLabelValue(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	head := strings.TrimRightFunc(name[:min(len(name), 46)], func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	})
	if head == "" {
		return hex.EncodeToString(sum[:8])
	}
	return head + "-" + hex.EncodeToString(sum[:8])
}

// MaxObjectBytes is the largest FriendDeletion, encoded as JSON, that the
// receiver sends to the API server: well under the 1.5 MiB that etcd takes
// in one request by default, with room for what the API server adds
// (managed fields, uid, timestamps).
const MaxObjectBytes = 1 << 20

// checkStoredSize refuses a FriendDeletion too large to store, before any
// request: a body within the size limit can still make one, when its
// accounts are full of characters that JSON escapes ("<" is six bytes as
// \u003c). No retry would change the answer, so it comes at once.
func checkStoredSize(fd *snsv1alpha1.FriendDeletion) *rejection {
	b, err := json.Marshal(fd)
	if err != nil {
		return withCause(reject(http.StatusInternalServerError, ReasonRejectedByAPIServer, "the FriendDeletion cannot be encoded"), err)
	}
	if len(b) > MaxObjectBytes {
		return rejectf(http.StatusRequestEntityTooLarge, ReasonObjectTooLarge,
			"the FriendDeletion would be larger than the %d bytes the receiver stores as one object: send fewer pairs per callback", MaxObjectBytes)
	}
	return nil
}
