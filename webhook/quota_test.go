package webhook

import (
	"net/http"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestQuotaExceeded fills a real ResourceQuota on
// count/frienddeletions.sns.imcallback.io (its status set by hand: no
// quota controller runs here, but the API server's quota admission does):
// the callback is answered FAIL with 503, QuotaExceeded in the metric and
// the log line, and nothing is stored. Freeing the quota lets the next one
// through.
func TestQuotaExceeded(t *testing.T) {
	h := newHarness(t)
	h.config("plain", nil)
	g := NewWithT(t)
	const res = corev1.ResourceName("count/frienddeletions.sns.imcallback.io")
	q := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "deletions"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{res: resource.MustParse("1")}},
	}
	g.Expect(h.env.Client.Create(t.Context(), q)).To(Succeed())
	q.Status.Hard = corev1.ResourceList{res: resource.MustParse("1")}
	q.Status.Used = corev1.ResourceList{res: resource.MustParse("1")}
	g.Expect(h.env.Client.Status().Update(t.Context(), q)).To(Succeed())
	h.logs.take()

	r := h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody("alice", "bob")})
	g.Expect(r.status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(r.answer).To(Equal(answer{ActionStatus: "FAIL", ErrorCode: 1,
		ErrorInfo: "the namespace's quota of FriendDeletions is used up: finished ones must be deleted first"}))
	g.Expect(h.deletions()).To(BeEmpty())
	lines := h.logs.take()
	g.Expect(lines).To(HaveLen(1))
	g.Expect(lines[0]).To(HaveKeyWithValue("reason", ReasonQuotaExceeded))
	g.Expect(lines[0]).To(HaveKeyWithValue("error", ContainSubstring("exceeded quota: deletions")))
	g.Expect(callbacksWithReason(g, h, ReasonQuotaExceeded)).To(Equal(1.0))

	// Room again: the callback is stored.
	q.Status.Used = corev1.ResourceList{res: resource.MustParse("0")}
	g.Expect(h.env.Client.Status().Update(t.Context(), q)).To(Succeed())
	expectOK(t, h.do(call{path: Path(h.ns, "plain"), query: query(), body: pairsBody("alice", "bob")}))
	g.Expect(h.deletions()).To(HaveLen(1))
}

// callbacksWithReason is the callbacks metric summed over a reason.
func callbacksWithReason(g Gomega, h *harness, reason string) float64 {
	families, err := h.registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	var total float64
	for _, mf := range families {
		if mf.GetName() != "friend_deletion_receiver_callbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}
