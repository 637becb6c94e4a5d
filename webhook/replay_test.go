package webhook

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// TestRefusedForGood decides, for each way the API server can refuse a
// replayed create, whether the entry is set aside or retried. Only what no
// retry can fix is set aside; an API server that is starting or warming its
// caches answers 401, 403 and 404 for a while, and those are retried.
func TestRefusedForGood(t *testing.T) {
	gr := schema.GroupResource{Group: snsv1alpha1.GroupVersion.Group, Resource: "frienddeletions"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"invalid", apierrors.NewInvalid(snsv1alpha1.GroupVersion.WithKind("FriendDeletion").GroupKind(), "fd-x", nil), true},
		{"entity too large", apierrors.NewRequestEntityTooLargeError("limit is 3145728"), true},
		{"etcd too large", apierrors.NewInternalError(errors.New("rpc error: code = ResourceExhausted desc = trying to send message larger than max (3145728 vs. 2097152)")), true},
		{"namespace gone", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "ns"), true},
		{"undecodable", errUndecodable, true},
		{"unauthorized", apierrors.NewUnauthorized("token not yet known"), false},
		{"forbidden", apierrors.NewForbidden(gr, "fd-x", errors.New("RBAC cache not synced")), false},
		{"resource not found", apierrors.NewNotFound(gr, "fd-x"), false},
		{"not found without details", apierrors.NewGenericServerResponse(404, "POST", gr, "", "", 0, false), false},
		{"bad request", apierrors.NewBadRequest("no"), false},
		{"service unavailable", apierrors.NewServiceUnavailable("etcd leader changed"), false},
		{"connection refused", &netOpError{errno: 111}, false},
		{"deadline", context.DeadlineExceeded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refusedForGood(tc.err); got != tc.want {
				t.Errorf("refusedForGood(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestReplayRetriesRefusalsThatMayPass replays, against the API server, a
// spool whose entries it first refuses as one warming up does (401, 403,
// 404 of the resource), beside one in a namespace that does not exist and
// one that is invalid. The last two are set aside and counted by the
// rejected gauge; the first three stay in the spool and are stored once
// the API server takes writes.
func TestReplayRetriesRefusalsThatMayPass(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns := env.Namespace(t)
	gr := schema.GroupResource{Group: snsv1alpha1.GroupVersion.Group, Resource: "frienddeletions"}
	sp, err := openSpool(t.TempDir(), 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	defer sp.close()
	for _, fd := range []*snsv1alpha1.FriendDeletion{
		spoolObject(ns, "one", "fd-unauthorized", 1),
		spoolObject(ns, "one", "fd-forbidden", 1),
		spoolObject(ns, "one", "fd-no-resource", 1),
		spoolObject(ns+"-gone", "one", "fd-namespace-gone", 1),
		spoolObject(ns, "one", "FD-Invalid", 1),
	} {
		_, err := sp.put(fd)
		g.Expect(err).NotTo(HaveOccurred())
	}

	var warming atomic.Bool
	warming.Store(true)
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	c := interceptor.NewClient(direct, interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if warming.Load() {
				switch obj.GetName() {
				case "fd-unauthorized":
					return apierrors.NewUnauthorized("the token is not known yet")
				case "fd-forbidden":
					return apierrors.NewForbidden(gr, obj.GetName(), errors.New("RBAC not synced yet"))
				case "fd-no-resource":
					return apierrors.NewNotFound(gr, obj.GetName())
				}
			}
			return cl.Create(ctx, obj, opts...)
		},
	})
	m, err := newMetrics(prometheus.NewRegistry())
	g.Expect(err).NotTo(HaveOccurred())
	p := &replayer{spool: sp, client: c, metrics: m, log: testLogs}

	n, err := p.replayOnce(t.Context())
	p.observe()
	g.Expect(err).To(HaveOccurred(), "refusals that may pass are retried after a backoff")
	g.Expect(n).To(Equal(2))
	left, err := sp.oldestEntries(10)
	g.Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, e := range left {
		names = append(names, e.entry.Object.Name)
	}
	g.Expect(names).To(Equal([]string{"fd-unauthorized", "fd-forbidden", "fd-no-resource"}))
	g.Expect(testutil.ToFloat64(m.spoolRejected)).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(m.spoolEntries)).To(Equal(3.0))
	g.Expect(testutil.ToFloat64(m.replayFailures.WithLabelValues(replayRejected))).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(m.replayFailures.WithLabelValues(replayTransient))).To(Equal(3.0))

	warming.Store(false)
	n, err = p.replayOnce(t.Context())
	p.observe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(n).To(Equal(3))
	g.Expect(sp.snapshot().entries).To(Equal(0))
	g.Expect(testutil.ToFloat64(m.spoolRejected)).To(Equal(2.0), "the set-aside entries stay until requeued")
	for _, name := range names {
		g.Expect(env.Client.Get(t.Context(), key(ns, name), &snsv1alpha1.FriendDeletion{})).To(Succeed())
	}
}

// TestSpoolRequeuesRejectedEntries sets two entries aside, spools one of
// them again (a redelivery after it was refused), reopens the spool and
// requeues: the other goes back to the waiting entries in its old place,
// the one spooled again is not doubled, and the rejected count and bytes
// follow.
func TestSpoolRequeuesRejectedEntries(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	for _, name := range []string{"fd-a", "fd-b"} {
		_, err := sp.put(spoolObject("ns", "one", name, 1))
		g.Expect(err).NotTo(HaveOccurred())
	}
	got, err := sp.oldestEntries(2)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(sp.remove(got, true)).To(Succeed())
	g.Expect(sp.snapshot().rejected).To(Equal(2))
	_, err = sp.put(spoolObject("ns", "one", "fd-c", 1))
	g.Expect(err).NotTo(HaveOccurred())
	dup, err := sp.put(spoolObject("ns", "one", "fd-b", 1))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dup).To(BeFalse(), "a set-aside entry's name is free")
	g.Expect(sp.close()).To(Succeed())

	sp, err = openSpool(dir, 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(sp.snapshot().rejected).To(Equal(2), "counted again on open")
	n, err := sp.requeueRejected()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(n).To(Equal(1))
	st := sp.snapshot()
	g.Expect(st.rejected).To(Equal(0))
	g.Expect(st.entries).To(Equal(3))
	left, err := sp.oldestEntries(10)
	g.Expect(err).NotTo(HaveOccurred())
	var names []string
	var bytes int64
	for _, e := range left {
		names = append(names, e.entry.Object.Name)
		bytes += e.size
	}
	g.Expect(names).To(Equal([]string{"fd-a", "fd-c", "fd-b"}), "the requeued entry keeps its place")
	g.Expect(st.bytes).To(Equal(bytes), "the dropped duplicate no longer takes room")
	g.Expect(sp.db.View(func(tx *bolt.Tx) error {
		g.Expect(tx.Bucket(bucketNames).Stats().KeyN).To(Equal(3))
		g.Expect(tx.Bucket(bucketRejected).Stats().KeyN).To(Equal(0))
		return nil
	})).To(Succeed())
	n, err = sp.requeueRejected()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(n).To(Equal(0))
	g.Expect(sp.close()).To(Succeed())
	checkSpoolFile(t, dir)
}
