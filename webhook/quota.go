package webhook

import (
	"errors"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ReasonQuotaExceeded is the metric and log reason of a callback refused
// because a ResourceQuota of the namespace (count/frienddeletions.
// sns.imcallback.io, say) is used up: nothing more can be stored until
// finished FriendDeletions are deleted, which no retry within the
// callback's budget changes.
const ReasonQuotaExceeded = "QuotaExceeded"

// quotaExceeded answers a create the ResourceQuota admission refused as
// over quota with 503 and ReasonQuotaExceeded, and anything else with nil.
// The API server says it as 403 Forbidden with a message "exceeded quota:
// <quota>, requested: ..., used: ..., limited: ..." (the quota admission
// plugin, k8s.io/apiserver/pkg/admission/plugin/resourcequota).
func quotaExceeded(err error) *rejection {
	var status apierrors.APIStatus
	if !apierrors.IsForbidden(err) || !errors.As(err, &status) || !strings.Contains(status.Status().Message, "exceeded quota:") {
		return nil
	}
	return withCause(reject(http.StatusServiceUnavailable, ReasonQuotaExceeded,
		"the namespace's quota of FriendDeletions is used up: finished ones must be deleted first"), err)
}
