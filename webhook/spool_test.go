package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gstruct"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// spoolObject is a FriendDeletion as the receiver builds it.
func spoolObject(ns, config, name string, pairs int) *snsv1alpha1.FriendDeletion {
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{snsv1alpha1.LabelConfig: config}},
		Spec: snsv1alpha1.FriendDeletionSpec{
			ConfigName: config, SDKAppID: testAppID, ReceivedAt: metav1.NewTime(fixedNow),
		},
	}
	for i := range pairs {
		fd.Spec.Pairs = append(fd.Spec.Pairs, snsv1alpha1.FriendPair{From: "user_000000001", To: fmt.Sprintf("friend_%09d", i)})
	}
	fd.Spec.PairCount = int32(pairs)
	return fd
}

func checkSpoolFile(t *testing.T, dir string) {
	t.Helper()
	db, err := bolt.Open(dir+"/"+SpoolFile, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("spool database is inconsistent: %v", err)
	}
}

func TestSpoolKeepsEntriesOldestFirstAcrossReopen(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	at := fixedNow
	s.now = func() time.Time { at = at.Add(time.Second); return at }

	names := []string{"fd-c", "fd-a", "fd-b"} // not in name order
	for i, n := range names {
		cfg := "one"
		if i == 2 {
			cfg = "two"
		}
		obj := spoolObject("ns", cfg, n, 2)
		obj.ResourceVersion, obj.UID = "12", "left-by-a-failed-try"
		dup, err := s.put(obj)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(dup).To(BeFalse())
	}
	dup, err := s.put(spoolObject("ns", "one", "fd-a", 2))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dup).To(BeTrue(), "a redelivery finds its entry")

	st := s.snapshot()
	g.Expect(st.entries).To(Equal(3))
	g.Expect(st.perConfig).To(Equal(map[types.NamespacedName]int{{Namespace: "ns", Name: "one"}: 2, {Namespace: "ns", Name: "two"}: 1}))
	g.Expect(st.oldest).To(Equal(fixedNow.Add(time.Second)))

	got, err := s.oldestEntries(10)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(HaveLen(3))
	for i, e := range got {
		g.Expect(e.entry.Object.Name).To(Equal(names[i]), "oldest first")
		g.Expect(e.entry.Object.ResourceVersion).To(BeEmpty())
		g.Expect(e.entry.Object.UID).To(BeEmpty())
		g.Expect(e.entry.Object.Spec.Pairs).To(HaveLen(2))
	}
	g.Expect(s.remove(got[:1], false)).To(Succeed())
	st = s.snapshot()
	g.Expect(st.entries).To(Equal(2))
	g.Expect(st.oldest).To(BeTemporally("==", fixedNow.Add(2*time.Second)))
	g.Expect(s.close()).To(Succeed())
	_, err = s.put(spoolObject("ns", "one", "fd-d", 1))
	g.Expect(err).To(MatchError(errSpoolClosed))

	checkSpoolFile(t, dir)
	s, err = openSpool(dir, 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	defer s.close()
	again := s.snapshot()
	g.Expect(again.entries).To(Equal(2))
	g.Expect(again.bytes).To(Equal(st.bytes))
	g.Expect(again.oldest).To(BeTemporally("==", st.oldest))
	g.Expect(again.perConfig).To(Equal(map[types.NamespacedName]int{{Namespace: "ns", Name: "one"}: 1, {Namespace: "ns", Name: "two"}: 1}))
	got, err = s.oldestEntries(10)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect([]string{got[0].entry.Object.Name, got[1].entry.Object.Name}).To(Equal(names[1:]))

	// A removed entry's name is free again: the same callback delivered
	// after its object was stored and deleted is a new entry.
	dup, err = s.put(spoolObject("ns", "one", "fd-c", 2))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dup).To(BeFalse())
}

func TestSpoolRefusesPastItsLimit(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	one := spoolObject("ns", "one", "fd-0", 10)
	probe, err := openSpool(t.TempDir(), 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = probe.put(one)
	g.Expect(err).NotTo(HaveOccurred())
	size := probe.snapshot().bytes
	g.Expect(probe.close()).To(Succeed())

	s, err := openSpool(dir, 3*size+size/2, time.Second) // room for three
	g.Expect(err).NotTo(HaveOccurred())
	defer s.close()
	for i := range 3 {
		_, err := s.put(spoolObject("ns", "one", fmt.Sprintf("fd-%d", i), 10))
		g.Expect(err).NotTo(HaveOccurred())
	}
	_, err = s.put(spoolObject("ns", "one", "fd-3", 10))
	g.Expect(err).To(MatchError(errSpoolFull))
	dup, err := s.put(spoolObject("ns", "one", "fd-1", 10))
	g.Expect(err).NotTo(HaveOccurred(), "a redelivery of a spooled callback is OK even when the spool is full")
	g.Expect(dup).To(BeTrue())
	g.Expect(s.snapshot().entries).To(Equal(3))

	got, err := s.oldestEntries(1)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s.remove(got, false)).To(Succeed())
	_, err = s.put(spoolObject("ns", "one", "fd-3", 10))
	g.Expect(err).NotTo(HaveOccurred(), "room again once an entry is replayed")

	// Entries set aside as refused still take room.
	got, err = s.oldestEntries(1)
	g.Expect(err).NotTo(HaveOccurred())
	before := s.snapshot()
	g.Expect(s.remove(got, true)).To(Succeed())
	after := s.snapshot()
	g.Expect(after.entries).To(Equal(before.entries - 1))
	g.Expect(after.bytes).To(Equal(before.bytes))
	_, err = s.put(spoolObject("ns", "one", "fd-4", 10))
	g.Expect(err).To(MatchError(errSpoolFull))
}

func TestTransient(t *testing.T) {
	gr := schema.GroupResource{Group: snsv1alpha1.GroupVersion.Group, Resource: "frienddeletions"}
	tooLarge := apierrors.NewInternalError(errors.New("rpc error: code = ResourceExhausted desc = trying to send message larger than max (3145728 vs. 2097152)"))
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &netOpError{syscall.ECONNREFUSED}, true},
		{"deadline", fmt.Errorf("Post: %w", context.DeadlineExceeded), true},
		{"service unavailable", apierrors.NewServiceUnavailable("etcd leader changed"), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), true},
		{"internal error", apierrors.NewInternalError(errors.New("etcdserver: leader changed")), true},
		{"gateway timeout", apierrors.NewTimeoutError("gateway", 1), true},
		{"invalid", apierrors.NewInvalid(snsv1alpha1.GroupVersion.WithKind("FriendDeletion").GroupKind(), "fd-x", nil), false},
		{"bad request", apierrors.NewBadRequest("no"), false},
		{"forbidden", apierrors.NewForbidden(gr, "fd-x", errors.New("RBAC")), false},
		{"namespace gone", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "ns"), false},
		{"entity too large", apierrors.NewRequestEntityTooLargeError("limit is 3145728"), false},
		{"etcd too large", tooLarge, false},
		{"etcd request too large", apierrors.NewInternalError(errors.New("etcdserver: request is too large")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := transient(tc.err); got != tc.want {
				t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// netOpError is a transport failure as the HTTP client reports it.
type netOpError struct{ errno syscall.Errno }

func (e *netOpError) Error() string { return "dial tcp 127.0.0.1:6443: " + e.errno.Error() }
func (e *netOpError) Unwrap() error { return e.errno }

func TestSyncSpoolCondition(t *testing.T) {
	now := metav1.NewTime(fixedNow)
	earlier := metav1.NewTime(fixedNow.Add(-time.Minute))
	typ := snsv1alpha1.SpoolConditionType("pod-0")
	ready := metav1.Condition{Type: snsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Configured"}
	spooled := func(msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: snsv1alpha1.ReasonCallbacksSpooled,
			Message: msg, ObservedGeneration: 1, LastTransitionTime: earlier}
	}
	other := metav1.Condition{Type: snsv1alpha1.SpoolConditionType("pod-1"), Status: metav1.ConditionTrue, Reason: snsv1alpha1.ReasonCallbacksSpooled, Message: "2 callbacks wait in the spool of pod-1 for the API server"}
	for _, tc := range []struct {
		name    string
		conds   []metav1.Condition
		waiting int
		changed bool
		want    []metav1.Condition
	}{
		{"none waits, none reported", []metav1.Condition{ready}, 0, false, []metav1.Condition{ready}},
		{"first spooled", []metav1.Condition{ready}, 1, true, []metav1.Condition{ready,
			{Type: typ, Status: metav1.ConditionTrue, Reason: snsv1alpha1.ReasonCallbacksSpooled, Message: "1 callback waits in the spool of pod-0 for the API server", ObservedGeneration: 1, LastTransitionTime: now}}},
		{"count changes, transition time stays", []metav1.Condition{ready, spooled("1 callback waits in the spool of pod-0 for the API server")}, 3, true,
			[]metav1.Condition{ready, spooled("3 callbacks wait in the spool of pod-0 for the API server")}},
		{"unchanged", []metav1.Condition{ready, spooled("3 callbacks wait in the spool of pod-0 for the API server")}, 3, false,
			[]metav1.Condition{ready, spooled("3 callbacks wait in the spool of pod-0 for the API server")}},
		{"drained: removed", []metav1.Condition{ready, spooled("3 callbacks wait in the spool of pod-0 for the API server")}, 0, true, []metav1.Condition{ready}},
		{"another replica's is left alone", []metav1.Condition{ready, other}, 0, false, []metav1.Condition{ready, other}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			st := &snsv1alpha1.CallbackConfigStatus{Conditions: tc.conds}
			g.Expect(syncSpoolCondition(st, 1, "pod-0", tc.waiting, now)).To(Equal(tc.changed))
			g.Expect(st.Conditions).To(Equal(tc.want))
		})
	}
}

// TestKeepSpoolsOnlyWhatMaySucceedLater decides, for each way the API
// server can fail a create, whether the callback is spooled and answered
// OK or answered FAIL and not spooled.
func TestKeepSpoolsOnlyWhatMaySucceedLater(t *testing.T) {
	gr := schema.GroupResource{Group: snsv1alpha1.GroupVersion.Group, Resource: "frienddeletions"}
	for _, tc := range []struct {
		name    string
		err     error
		full    bool
		broken  bool
		status  int
		reason  string
		spooled bool
	}{
		{"created", nil, false, false, 0, "", false},
		{"connection refused", &netOpError{syscall.ECONNREFUSED}, false, false, 0, "", true},
		{"no answer", context.DeadlineExceeded, false, false, 0, "", true},
		{"503", apierrors.NewServiceUnavailable("etcd"), false, false, 0, "", true},
		{"429", apierrors.NewTooManyRequests("later", 1), false, false, 0, "", true},
		{"invalid", apierrors.NewInvalid(snsv1alpha1.GroupVersion.WithKind("FriendDeletion").GroupKind(), "fd-x", nil), false, false, http.StatusInternalServerError, ReasonRejectedByAPIServer, false},
		{"forbidden", apierrors.NewForbidden(gr, "fd-x", errors.New("RBAC")), false, false, http.StatusServiceUnavailable, ReasonStoreFailed, false},
		{"too large", apierrors.NewRequestEntityTooLargeError("limit"), false, false, 0, "", false},
		{"spool full", &netOpError{syscall.ECONNREFUSED}, true, false, http.StatusServiceUnavailable, ReasonSpoolFull, false},
		{"spool write fails", &netOpError{syscall.ECONNREFUSED}, false, true, http.StatusServiceUnavailable, ReasonSpoolFailed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithInterceptorFuncs(interceptor.Funcs{
				Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if tc.err == nil {
						return cl.Create(ctx, obj, opts...)
					}
					if errors.Is(tc.err, context.DeadlineExceeded) {
						<-ctx.Done()
						return ctx.Err()
					}
					return tc.err
				},
			}).Build()
			m, err := newMetrics(prometheus.NewRegistry())
			g.Expect(err).NotTo(HaveOccurred())
			limit := int64(1 << 20)
			if tc.full {
				limit = 1
			}
			sp, err := openSpool(t.TempDir(), limit, time.Second)
			g.Expect(err).NotTo(HaveOccurred())
			defer sp.close()
			if tc.broken {
				// The closed database fails every commit ("database
				// not open"); TestDrillSpoolWriteFails and
				// TestDrillSpoolWritesFailPartway fail real disk writes.
				g.Expect(sp.db.Close()).To(Succeed())
			}
			r := &Receiver{store: &store{client: c, metrics: m}, budget: 300 * time.Millisecond, spool: sp, spoolAfter: 150 * time.Millisecond, metrics: m, log: testLogs}
			ctx, cancel := context.WithTimeout(context.Background(), r.budget)
			defer cancel()
			rej := r.keep(ctx, spoolObject("ns", "one", "fd-x", 1))
			switch {
			case tc.status != 0:
				g.Expect(rej).NotTo(BeNil())
				g.Expect(rej.status).To(Equal(tc.status))
				g.Expect(rej.reason).To(Equal(tc.reason))
			case tc.name == "too large":
				g.Expect(rej).NotTo(BeNil(), "a refusal no retry can fix is answered FAIL")
			default:
				g.Expect(rej).To(BeNil())
			}
			g.Expect(sp.snapshot().entries).To(Equal(map[bool]int{true: 1, false: 0}[tc.spooled]))
			if tc.spooled {
				g.Expect(testutil.ToFloat64(m.spoolWrites.WithLabelValues(spoolWriteSpooled))).To(Equal(1.0))
			}
		})
	}
}

// TestSpoolConditionShownByKubectlGetCBC spools callbacks of one config and
// flushes status: the config gets this replica's spool condition, which
// `kubectl get cbc` shows in its SPOOLED column, and the Ready condition and
// other configs are left alone; once the spool is empty the condition goes.
func TestSpoolConditionShownByKubectlGetCBC(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t)
	cfg := h.config("plain", nil)
	h.reconciled(cfg)
	h.reconciled(h.config("other", nil))
	sp, err := openSpool(t.TempDir(), 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	defer sp.close()
	f := h.newFlusher(time.Hour)
	f.spool, f.replica, f.now = sp, "receiver-7f9c-x2", time.Now

	for i := range 3 {
		_, err := sp.put(spoolObject(h.ns, "plain", fmt.Sprintf("fd-%d", i), 1))
		g.Expect(err).NotTo(HaveOccurred())
	}
	f.flush(t.Context())
	want := "3 callbacks wait in the spool of receiver-7f9c-x2 for the API server"
	st := h.status("plain")
	g.Expect(st.Conditions).To(HaveLen(2))
	g.Expect(st.Conditions[0].Type).To(Equal(snsv1alpha1.ConditionReady))
	g.Expect(st.Conditions[1]).To(gstruct.MatchFields(gstruct.IgnoreExtras, gstruct.Fields{
		"Type": Equal("spool.sns.imcallback.io/receiver-7f9c-x2"), "Status": Equal(metav1.ConditionTrue),
		"Reason": Equal(snsv1alpha1.ReasonCallbacksSpooled), "Message": Equal(want),
	}))
	g.Expect(h.status("other").Conditions).To(HaveLen(1))

	out, err := h.env.Kubectl(t, "get", "cbc", "-n", h.ns)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(MatchRegexp(`(?m)^NAME\s+SDKAPPID\s+READY\s+PATH\s+LAST CALLBACK\s+SPOOLED\s+AGE$`))
	g.Expect(out).To(MatchRegexp(`(?m)^plain\s.*` + want))

	// Nothing changed: nothing written.
	rv := func() string {
		c := &snsv1alpha1.CallbackConfig{}
		g.Expect(h.env.Client.Get(t.Context(), key(h.ns, "plain"), c)).To(Succeed())
		return c.ResourceVersion
	}
	before := rv()
	h.waitCached(&snsv1alpha1.CallbackConfig{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "plain", ResourceVersion: before}}, &snsv1alpha1.CallbackConfig{})
	f.flush(t.Context())
	g.Expect(rv()).To(Equal(before))

	got, err := sp.oldestEntries(10)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(sp.remove(got, false)).To(Succeed())
	f.flush(t.Context())
	g.Expect(h.status("plain").Conditions).To(HaveLen(1))
	out, err = h.env.Kubectl(t, "get", "cbc", "plain", "-n", h.ns)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).NotTo(ContainSubstring("spool of"))
}

// TestReplayOnceSortsOutcomes replays a spool holding a good entry, one the
// API server refuses for good, one it cannot take yet, one already stored
// and one that cannot be decoded: stored and already-stored ones leave the
// spool, refused and undecodable ones are set aside (their names freed),
// and the one that may pass stays for the next try.
func TestReplayOnceSortsOutcomes(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	defer sp.close()
	for _, name := range []string{"fd-good", "fd-invalid", "fd-later", "fd-there"} {
		_, err := sp.put(spoolObject("ns", "one", name, 1))
		g.Expect(err).NotTo(HaveOccurred())
	}
	// A damaged entry, as a torn or foreign write would leave.
	g.Expect(sp.db.Update(func(tx *bolt.Tx) error {
		k := seqKey(99)
		if err := tx.Bucket(bucketEntries).Put(k, []byte("{not json")); err != nil {
			return err
		}
		return tx.Bucket(bucketNames).Put([]byte("ns/fd-damaged"), k)
	})).To(Succeed())
	sp.state.entries++

	there := spoolObject("ns", "one", "fd-there", 1)
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithObjects(there).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			switch obj.GetName() {
			case "fd-invalid":
				return apierrors.NewInvalid(snsv1alpha1.GroupVersion.WithKind("FriendDeletion").GroupKind(), "fd-invalid", nil)
			case "fd-later":
				return apierrors.NewServiceUnavailable("etcd leader changed")
			}
			return cl.Create(ctx, obj, opts...)
		},
	}).Build()
	m, err := newMetrics(prometheus.NewRegistry())
	g.Expect(err).NotTo(HaveOccurred())
	p := &replayer{spool: sp, client: c, metrics: m, log: testLogs}

	n, err := p.replayOnce(t.Context())
	g.Expect(err).To(HaveOccurred(), "the one that may pass is retried after a backoff")
	g.Expect(n).To(Equal(4))
	left, err := sp.oldestEntries(10)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(left).To(HaveLen(1))
	g.Expect(left[0].entry.Object.Name).To(Equal("fd-later"))
	g.Expect(sp.snapshot().entries).To(Equal(1))
	g.Expect(testutil.ToFloat64(m.replays)).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(m.replayFailures.WithLabelValues(replayRejected))).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(m.replayFailures.WithLabelValues(replayTransient))).To(Equal(1.0))
	g.Expect(c.Get(t.Context(), key("ns", "fd-good"), &snsv1alpha1.FriendDeletion{})).To(Succeed())

	g.Expect(sp.db.View(func(tx *bolt.Tx) error {
		g.Expect(tx.Bucket(bucketRejected).Stats().KeyN).To(Equal(2))
		var names []string
		g.Expect(tx.Bucket(bucketNames).ForEach(func(k, _ []byte) error { names = append(names, string(k)); return nil })).To(Succeed())
		g.Expect(names).To(ConsistOf("ns/fd-later"))
		return nil
	})).To(Succeed())
}

// TestKeepAnswersAtTheDeadlineWhenCreateAndSpoolHang holds both the create
// (the API server accepts the connection and never answers) and the spool
// write (its writer is held, as by an fsync that does not return): keep
// answers 503 SpoolFailed once the callback's budget ends, without waiting
// for the spool write, and the write, once it goes through, still keeps
// the callback (answered FAIL, stored later: nothing lost). What bounds the
// answer is the context's deadline, which the test checks has passed, not
// a measured time.
func TestKeepAnswersAtTheDeadlineWhenCreateAndSpoolHang(t *testing.T) {
	g := NewWithT(t)
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme()).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, _ client.Object, _ ...client.CreateOption) error {
			<-ctx.Done()
			return ctx.Err()
		},
	}).Build()
	m, err := newMetrics(prometheus.NewRegistry())
	g.Expect(err).NotTo(HaveOccurred())
	sp, err := openSpool(t.TempDir(), 1<<20, time.Second)
	g.Expect(err).NotTo(HaveOccurred())
	defer sp.close()
	sp.wmu.Lock() // the spool's writer now hangs in its commit
	held := true
	defer func() {
		if held {
			sp.wmu.Unlock()
		}
	}()
	r := &Receiver{store: &store{client: c, metrics: m}, budget: 300 * time.Millisecond, spool: sp, spoolAfter: 150 * time.Millisecond, metrics: m, log: testLogs}
	ctx, cancel := context.WithTimeout(context.Background(), r.budget)
	defer cancel()

	answered := make(chan *rejection, 1)
	go func() { answered <- r.keep(ctx, spoolObject("ns", "one", "fd-x", 1)) }()
	var rej *rejection
	select {
	case rej = <-answered:
	case <-time.After(time.Minute): // a guard against a hang, not a measure
		t.Fatal("keep waited for the hanging spool write instead of answering at its deadline")
	}
	g.Expect(ctx.Err()).To(MatchError(context.DeadlineExceeded), "keep answered at the budget's end, not before")
	g.Expect(rej).NotTo(BeNil())
	g.Expect(rej.status).To(Equal(http.StatusServiceUnavailable))
	g.Expect(rej.reason).To(Equal(ReasonSpoolFailed))
	g.Expect(rej.cause).To(MatchError(context.DeadlineExceeded))
	g.Expect(testutil.ToFloat64(m.spoolWrites.WithLabelValues(spoolWriteTimeout))).To(Equal(1.0))
	g.Expect(sp.snapshot().entries).To(BeZero(), "the write still hangs")

	held = false
	sp.wmu.Unlock()
	g.Eventually(func() int { return sp.snapshot().entries }).Should(Equal(1), "the late write still keeps the callback")
}
