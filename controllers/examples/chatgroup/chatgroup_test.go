package chatgroup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/examples/chatgroup"
	"github.com/imcallback/friend-deletion-operator/controllers/manager"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

var env *testenv.Env

// TestMain starts one control plane, with the operator's CRDs, for the
// package.
func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	testenv.Run(m, func(e *testenv.Env) { env = e })
}

func gt(t *testing.T) *WithT {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(30 * time.Second)
	g.SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	return g
}

// chatService is a fake of the chat service's REST API on a real socket. It
// counts the calls per pair and answers each with what answer says.
type chatService struct {
	*httptest.Server
	mu     sync.Mutex
	calls  map[string]int // "group from to" -> calls
	keys   map[string]bool
	answer func(from, to string, call int) (status int, retryAfter string)
}

func newChatService(t *testing.T) *chatService {
	s := &chatService{calls: map[string]int{}, keys: map[string]bool{},
		answer: func(string, string, int) (int, string) { return http.StatusNoContent, "" }}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/api/groups/")
		group, ok2 := strings.CutSuffix(rest, "/remove-pair")
		if !ok || !ok2 || r.Method != http.MethodPost {
			http.Error(w, "no such route", http.StatusBadRequest)
			return
		}
		var body struct{ From, To string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		id := group + " " + body.From + " " + body.To
		s.calls[id]++
		n := s.calls[id]
		s.keys[r.Header.Get("Idempotency-Key")] = true
		answer := s.answer
		s.mu.Unlock()
		status, retryAfter := answer(body.From, body.To, n)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "status %d", status)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *chatService) callsOf(group, from, to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[group+" "+from+" "+to]
}

func (s *chatService) setAnswer(f func(from, to string, call int) (int, string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = f
}

func (s *chatService) idempotencyKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

// startOperator runs the operator with the chat-group step for one
// namespace, as cmd/manager does, and returns a function that stops it.
func startOperator(t *testing.T, ns string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- manager.Run(ctx, manager.TestOptions(env.Config, ns), chatgroup.SetupWithManager) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager stopped with an error: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// create creates a config whose one step is chat-group with params, and a
// FriendDeletion of n pairs alice -> friend-<i>.
func create(t *testing.T, ns string, params map[string]string, n int) {
	g := NewWithT(t)
	g.Expect(env.Client.Create(t.Context(), &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{{
			Name: chatgroup.StepName, External: &snsv1alpha1.ExternalStep{Params: params},
		}}},
	})).To(Succeed())
	fd := &snsv1alpha1.FriendDeletion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fd1"},
		Spec:       snsv1alpha1.FriendDeletionSpec{ConfigName: "app", SDKAppID: "1400000001", PairCount: int32(n), ReceivedAt: metav1.Now()},
	}
	for i := range n {
		fd.Spec.Pairs = append(fd.Spec.Pairs, snsv1alpha1.FriendPair{From: "alice", To: fmt.Sprintf("friend-%d", i)})
	}
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())
}

// step returns the chat-group step's status once check passes.
func step(t *testing.T, ns string, check func(g Gomega, st snsv1alpha1.StepStatus)) snsv1alpha1.StepStatus {
	var st snsv1alpha1.StepStatus
	gt(t).Eventually(func(g Gomega) {
		fd := &snsv1alpha1.FriendDeletion{}
		g.Expect(env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "fd1"}, fd)).To(Succeed())
		g.Expect(fd.Status.Steps).To(HaveLen(1))
		st = fd.Status.Steps[0]
		check(g, st)
	}).Should(Succeed())
	return st
}

func TestRemovesEveryPair(t *testing.T) {
	ns := env.Namespace(t)
	chat := newChatService(t)
	startOperator(t, ns)
	create(t, ns, map[string]string{chatgroup.ParamEndpoint: chat.URL + "/api", chatgroup.ParamGroup: "all-staff"}, 3)

	st := step(t, ns, func(g Gomega, st snsv1alpha1.StepStatus) {
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	})
	g := gt(t)
	g.Expect(st.Message).To(Equal("Removed 3 pairs from group all-staff."))
	g.Expect(st.Attempts).To(BeZero())
	for i := range 3 {
		g.Expect(chat.callsOf("all-staff", "alice", fmt.Sprintf("friend-%d", i))).To(Equal(1), "pair %d", i)
	}
	g.Expect(chat.idempotencyKeys()).To(Equal(3))
}

func TestRetriesAnOverloadedServiceAfterRetryAfter(t *testing.T) {
	ns := env.Namespace(t)
	chat := newChatService(t)
	chat.setAnswer(func(_, to string, call int) (int, string) {
		if to == "friend-1" && call == 1 {
			return http.StatusServiceUnavailable, "1"
		}
		return http.StatusOK, ""
	})
	startOperator(t, ns)
	create(t, ns, map[string]string{chatgroup.ParamEndpoint: chat.URL + "/api", chatgroup.ParamGroup: "g1"}, 3)

	step(t, ns, func(g Gomega, st snsv1alpha1.StepStatus) {
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	})
	g := gt(t)
	g.Expect(chat.callsOf("g1", "alice", "friend-0")).To(Equal(1))
	g.Expect(chat.callsOf("g1", "alice", "friend-1")).To(Equal(2))
	g.Expect(chat.callsOf("g1", "alice", "friend-2")).To(Equal(1))
}

// TestRestartResumesFromTheCheckpoint: the service fails at pair 150 of
// 250; the manager stops; a new one goes on from the checkpoint and calls
// none of the first 150 pairs again.
func TestRestartResumesFromTheCheckpoint(t *testing.T) {
	ns := env.Namespace(t)
	chat := newChatService(t)
	chat.setAnswer(func(_, to string, _ int) (int, string) {
		if to == "friend-150" {
			return http.StatusBadGateway, "1"
		}
		return http.StatusOK, ""
	})
	stop := startOperator(t, ns)
	create(t, ns, map[string]string{chatgroup.ParamEndpoint: chat.URL + "/api", chatgroup.ParamGroup: "g1"}, 250)

	st := step(t, ns, func(g Gomega, st snsv1alpha1.StepStatus) {
		g.Expect(st.Attempts).To(BeNumerically(">=", 1))
	})
	g := gt(t)
	g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
	g.Expect(st.Checkpoint).To(Equal("next=150"))
	g.Expect(st.Message).To(MatchRegexp(`^Attempt [0-9]+ failed: Removing pair 151 of 250: chat service answered 502 Bad Gateway: status 502; next attempt at `))
	g.Expect(st.NextAttemptTime).NotTo(BeNil())
	stop()

	chat.setAnswer(func(string, string, int) (int, string) { return http.StatusOK, "" })
	startOperator(t, ns)
	st = step(t, ns, func(g Gomega, st snsv1alpha1.StepStatus) {
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseSucceeded))
	})
	g.Expect(st.Checkpoint).To(Equal("next=250"))
	for i := range 250 {
		n := chat.callsOf("g1", "alice", fmt.Sprintf("friend-%d", i))
		if i == 150 {
			g.Expect(n).To(BeNumerically(">=", 2), "pair %d", i)
		} else {
			g.Expect(n).To(Equal(1), "pair %d", i)
		}
	}
}

func TestRefusedCallFailsTheStep(t *testing.T) {
	ns := env.Namespace(t)
	chat := newChatService(t)
	chat.setAnswer(func(string, string, int) (int, string) { return http.StatusForbidden, "" })
	startOperator(t, ns)
	create(t, ns, map[string]string{chatgroup.ParamEndpoint: chat.URL + "/api", chatgroup.ParamGroup: "g1"}, 2)

	st := step(t, ns, func(g Gomega, st snsv1alpha1.StepStatus) {
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseFailed))
	})
	g := gt(t)
	g.Expect(st.Message).To(Equal("Removing pair 1 of 2: chat service answered 403 Forbidden: status 403"))
	g.Expect(chat.callsOf("g1", "alice", "friend-1")).To(BeZero())
}

func TestMissingParamsFailTheStep(t *testing.T) {
	ns := env.Namespace(t)
	startOperator(t, ns)
	create(t, ns, map[string]string{chatgroup.ParamEndpoint: "https://chat.example.com/api"}, 1)

	st := step(t, ns, func(g Gomega, st snsv1alpha1.StepStatus) {
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseFailed))
	})
	gt(t).Expect(st.Message).To(Equal("params.group is not set."))
}

// TestWritesOfTheLargestFriendDeletion counts the writes to a 2000-pair
// FriendDeletion, from its creation to Succeeded: the step's checkpoints
// every CheckpointEvery pairs and its outcome, each followed by the
// FriendDeletion reconciler's update of the conditions, plus the few
// writes of the step's start and the end.
func TestWritesOfTheLargestFriendDeletion(t *testing.T) {
	ns := env.Namespace(t)
	chat := newChatService(t)
	g := gt(t)
	watcher, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	w, err := watcher.Watch(t.Context(), &snsv1alpha1.FriendDeletionList{}, client.InNamespace(ns))
	g.Expect(err).NotTo(HaveOccurred())
	defer w.Stop()

	startOperator(t, ns)
	create(t, ns, map[string]string{chatgroup.ParamEndpoint: chat.URL + "/api", chatgroup.ParamGroup: "g1"}, snsv1alpha1.MaxPairs)

	writes := 0
	g.Eventually(func() snsv1alpha1.Phase {
		for {
			select {
			case e := <-w.ResultChan():
				if e.Type == watch.Modified {
					writes++
				}
				if fd, ok := e.Object.(*snsv1alpha1.FriendDeletion); ok && fd.Status.Phase.Finished() {
					return fd.Status.Phase
				}
			default:
				return ""
			}
		}
	}).Should(Equal(snsv1alpha1.PhaseSucceeded))
	checkpoints := snsv1alpha1.MaxPairs/chatgroup.CheckpointEvery - 1
	t.Logf("%d writes for %d pairs (%d checkpoints)", writes, snsv1alpha1.MaxPairs, checkpoints)
	g.Expect(writes).To(BeNumerically("<=", 2*(checkpoints+1)+4))
	g.Expect(chat.idempotencyKeys()).To(Equal(snsv1alpha1.MaxPairs))
}
