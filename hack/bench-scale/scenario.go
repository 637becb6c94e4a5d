package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
	"github.com/imcallback/friend-deletion-operator/hack/localcluster/cluster"
)

// The configs a run can measure.
const (
	configUnbatched = "unbatched"
	configBatched   = "batched"
)

const (
	namespace  = "bench"
	configName = "app"
	sdkAppID   = "1400000001"
	token      = "bench-scale-token"
	jobStep    = "purge"
	httpStep   = "notify"
)

// scenario is one config's run: its cluster, processes and observations.
type scenario struct {
	f       flags
	name    string
	dir     string
	local   *cluster.Cluster
	cs      kubernetes.Interface
	cl      client.Client
	sink    *sink
	procs   map[string]*cluster.Process
	recvURL string

	// Filled by the FriendDeletion watch.
	mu       sync.Mutex
	phases   map[string]snsv1alpha1.Phase
	finished map[string]time.Time
	lastDone time.Time
	watchErr atomic.Value
}

// runConfig measures one config on a cluster of its own.
func runConfig(ctx context.Context, f flags, name string) (res *result, retErr error) {
	dir, err := os.MkdirTemp("", "bench-scale-"+name+"-")
	if err != nil {
		return nil, err
	}
	s := &scenario{f: f, name: name, dir: dir, procs: map[string]*cluster.Process{},
		phases: map[string]snsv1alpha1.Phase{}, finished: map[string]time.Time{}}
	defer func() {
		s.stop()
		if retErr != nil || f.keep {
			fmt.Printf("%s: cluster folder kept: %s (logs in %s)\n", name, dir, filepath.Join(dir, "logs"))
		} else {
			_ = os.RemoveAll(dir)
		}
	}()

	// The FriendDeletion watch and the sender end with the config, before
	// its cluster stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	fmt.Printf("\n=== %s: starting a local cluster in %s (etcd: %s)\n", name, dir, fsyncWord(f.etcdFsync))
	s.local, err = cluster.Start(ctx, cluster.Options{Dir: dir, AssetsDir: f.assets, Out: prefixed(name), EtcdFsync: f.etcdFsync})
	if err != nil {
		return nil, err
	}
	if s.cs, err = kubernetes.NewForConfig(s.local.Config); err != nil {
		return nil, err
	}
	scheme := testenv.Scheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if s.cl, err = client.New(s.local.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	if err := s.setUp(ctx); err != nil {
		return nil, err
	}
	return s.measure(ctx)
}

// setUp installs the CRDs, the namespace, the sink, the operator and the
// CallbackConfig, and waits until the receiver knows the config.
func (s *scenario) setUp(ctx context.Context) error {
	s.logf("installing the CRDs")
	if err := installCRDs(ctx, s.cl); err != nil {
		return err
	}
	if err := s.cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	if err := s.local.WaitForServiceAccount(ctx, namespace); err != nil {
		return err
	}
	var err error
	if s.sink, err = startSink(); err != nil {
		return err
	}
	s.logf("http step sink on %s", s.sink.url)
	if err := s.startOperator(ctx); err != nil {
		return err
	}
	batch := ""
	if s.name == configBatched {
		batch = " with batch " + s.f.batchRaw
	}
	s.logf("creating the CallbackConfig (job step %q%s, http step %q)", jobStep, batch, httpStep)
	if err := s.createConfig(ctx); err != nil {
		return err
	}
	return s.waitConfigKnown(ctx)
}

// installCRDs creates the operator's CRDs (compiled in from
// config/crd/bases) and waits until the API server serves them.
func installCRDs(ctx context.Context, cl client.Client) error {
	crds, err := testenv.CRDs()
	if err != nil {
		return err
	}
	for _, crd := range crds {
		if err := cl.Create(ctx, crd); err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
	}
	return poll(ctx, time.Minute, "the CRDs to be Established", func() error {
		for _, crd := range crds {
			var got apiextensionsv1.CustomResourceDefinition
			if err := cl.Get(ctx, client.ObjectKey{Name: crd.Name}, &got); err != nil {
				return err
			}
			established := false
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return fmt.Errorf("%s not Established", crd.Name)
			}
		}
		return nil
	})
}

// crdHasBatch reports an error unless the CallbackConfig CRD compiled into
// this tool has spec.cleanup[].batch.
func crdHasBatch() error {
	crds, err := testenv.CRDs()
	if err != nil {
		return err
	}
	for _, crd := range crds {
		if crd.Spec.Names.Kind != "CallbackConfig" {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			step := v.Schema.OpenAPIV3Schema.Properties["spec"].Properties["cleanup"].Items
			if step != nil && step.Schema != nil {
				if _, ok := step.Schema.Properties["batch"]; ok {
					return nil
				}
			}
		}
		return errors.New("the CallbackConfig CRD in config/crd/bases has no spec.cleanup[].batch, so the API server would refuse (or prune) the batched job step: " +
			"batched Job steps (issue 10, item 1) are not in this tree. Run -configs=unbatched, or measure after they are merged")
	}
	return errors.New("no CallbackConfig CRD compiled in from config/crd/bases")
}

// startOperator starts the built manager twice, as installs run it: the
// receiver (--role=receiver, with a spool) and the controllers
// (--role=controllers, with leader election), each its own process, as the
// cluster's admin.
func (s *scenario) startOperator(ctx context.Context) error {
	ports := make([]int, 5)
	for i := range ports {
		p, err := cluster.FreePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	recvAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	s.recvURL = "http://" + recvAddr
	roles := []struct {
		name string
		args []string
	}{
		{"receiver", []string{"--receiver-bind-address=" + recvAddr, "--receiver-spool-dir=" + filepath.Join(s.dir, "spool"), "--receiver-replica-name=bench"}},
		{"controllers", []string{"--leader-elect", "--leader-election-namespace=default"}},
	}
	for i, role := range roles {
		health := "127.0.0.1:" + strconv.Itoa(ports[1+2*i])
		args := append([]string{
			"--role=" + role.name,
			"--kubeconfig=" + s.local.KubeconfigPath,
			"--health-probe-bind-address=" + health,
			"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[2+2*i]),
			"--metrics-secure=false",
		}, role.args...)
		p := &cluster.Process{Name: role.name, Path: s.f.manager, Args: args, LogPath: filepath.Join(s.dir, "logs", role.name+".log")}
		s.logf("starting %s --role=%s", s.f.manager, role.name)
		if err := p.Start(); err != nil {
			return err
		}
		s.procs[role.name] = p
		if err := p.WaitReady(ctx, "http://"+health+"/readyz"); err != nil {
			return err
		}
	}
	return nil
}

// createConfig creates the token Secret and the CallbackConfig: a job step
// (with the -batch block in the batched config) and an http step to the
// sink. Strict field validation makes the API server refuse a field its
// CRD does not know instead of dropping it.
func (s *scenario) createConfig(ctx context.Context) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "app-token"},
		StringData: map[string]string{"token": token},
	}
	if err := s.cl.Create(ctx, secret); err != nil {
		return err
	}
	job := map[string]any{
		"name": jobStep,
		"job": map[string]any{"spec": map[string]any{
			"backoffLimit": int64(2),
			"template": map[string]any{"spec": map[string]any{
				"restartPolicy": "Never",
				"containers": []any{map[string]any{
					"name":    "purge",
					"image":   "busybox:1.37",
					"command": []any{"sh", "-c", `echo "$PAIR_COUNT pair(s)"; cat "$PAIRS_FILE"`},
				}},
			}},
		}},
	}
	if s.name == configBatched {
		job["batch"] = s.f.batch
	}
	cc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": snsv1alpha1.GroupVersion.String(),
		"kind":       "CallbackConfig",
		"metadata":   map[string]any{"namespace": namespace, "name": configName},
		"spec": map[string]any{
			"sdkAppID": sdkAppID,
			"auth":     map[string]any{"tokenSecretRef": map[string]any{"name": "app-token", "key": "token"}},
			"cleanup": []any{job, map[string]any{
				"name": httpStep,
				"http": map[string]any{"url": s.sink.url + "/friend-deleted"},
			}},
		},
	}}
	if err := s.cl.Create(ctx, cc, &client.CreateOptions{Raw: &metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}}); err != nil {
		if apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) {
			return fmt.Errorf("the API server refused the %s CallbackConfig: %w", s.name, err)
		}
		return err
	}
	return nil
}

// waitConfigKnown waits for the config's Ready condition, then until the
// receiver has it in its cache: a callback with a wrong signature is
// answered 401, not 404. Nothing it sends is stored.
func (s *scenario) waitConfigKnown(ctx context.Context) error {
	if err := poll(ctx, 2*time.Minute, "the CallbackConfig to be Ready", func() error {
		var cc snsv1alpha1.CallbackConfig
		if err := s.cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: configName}, &cc); err != nil {
			return err
		}
		for _, c := range cc.Status.Conditions {
			if c.Type == "Ready" {
				if c.Status == metav1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("Ready is %s: %s", c.Status, c.Message)
			}
		}
		return errors.New("no Ready condition yet")
	}); err != nil {
		return err
	}
	return poll(ctx, time.Minute, "the receiver to know the CallbackConfig", func() error {
		a := newSender(s.recvURL, 1).send(ctx, 0, "probe", "probe", "wrong-sign")
		if a.status == 404 {
			return fmt.Errorf("answered 404: %s", a.info)
		}
		if a.err != nil {
			return a.err
		}
		return nil
	})
}

// watchFriendDeletions records each FriendDeletion's phase and when it was
// first seen finished.
func (s *scenario) watchFriendDeletions(ctx context.Context) error {
	c, err := cache.New(s.local.Config, cache.Options{Scheme: testenv.Scheme(), DefaultNamespaces: map[string]cache.Config{namespace: {}}})
	if err != nil {
		return err
	}
	inf, err := c.GetInformer(ctx, &snsv1alpha1.FriendDeletion{})
	if err != nil {
		return err
	}
	record := func(obj any) {
		fd, ok := obj.(*snsv1alpha1.FriendDeletion)
		if !ok {
			return
		}
		now := time.Now()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.phases[fd.Name] = fd.Status.Phase
		if fd.Status.Phase.Finished() {
			if _, seen := s.finished[fd.Name]; !seen {
				s.finished[fd.Name] = now
				s.lastDone = now
			}
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    record,
		UpdateFunc: func(_, obj any) { record(obj) },
	}); err != nil {
		return err
	}
	go func() {
		if err := c.Start(ctx); err != nil && ctx.Err() == nil {
			s.watchErr.Store(err)
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		return errors.New("the FriendDeletion watch did not sync")
	}
	return nil
}

// counts returns how many FriendDeletions are in each phase, and how many
// finished.
func (s *scenario) counts() (byPhase map[snsv1alpha1.Phase]int, finished int, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byPhase = map[snsv1alpha1.Phase]int{}
	for _, p := range s.phases {
		byPhase[p]++
	}
	return byPhase, len(s.finished), s.lastDone
}

// objectCount is how many objects of a kind the namespace holds, from one
// List of one item (the API server says how many remain).
func (s *scenario) objectCount(ctx context.Context, kind string) (int, error) {
	opts := metav1.ListOptions{Limit: 1}
	var items int
	var remaining *int64
	switch kind {
	case "jobs":
		l, err := s.cs.BatchV1().Jobs(namespace).List(ctx, opts)
		if err != nil {
			return 0, err
		}
		items, remaining = len(l.Items), l.RemainingItemCount
	case "pods":
		l, err := s.cs.CoreV1().Pods(namespace).List(ctx, opts)
		if err != nil {
			return 0, err
		}
		items, remaining = len(l.Items), l.RemainingItemCount
	default:
		return 0, fmt.Errorf("objectCount: unknown kind %s", kind)
	}
	if remaining != nil {
		items += int(*remaining)
	}
	return items, nil
}

// processAlive reports an operator process that exited.
func (s *scenario) processAlive() error {
	for _, p := range s.procs {
		if exited, _ := p.Exited(); exited {
			return p.ExitError()
		}
	}
	if err, ok := s.watchErr.Load().(error); ok && err != nil {
		return fmt.Errorf("the FriendDeletion watch stopped: %w", err)
	}
	return nil
}

// stop stops the operator, the sink and the cluster.
func (s *scenario) stop() {
	for _, name := range []string{"receiver", "controllers"} {
		if p := s.procs[name]; p != nil {
			if err := p.Stop(15 * time.Second); err != nil {
				s.logf("%v", err)
			}
		}
	}
	if s.sink != nil {
		s.sink.close()
	}
	if s.local != nil {
		if err := s.local.Stop(); err != nil {
			s.logf("stopping the cluster: %v", err)
		}
	}
}

func (s *scenario) logf(format string, args ...any) {
	fmt.Printf("%s: %s\n", s.name, fmt.Sprintf(format, args...))
}

// poll calls check until it returns nil, for at most timeout.
func poll(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// prefixed writes the cluster's progress lines with the config's name.
type prefixed string

func (p prefixed) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			fmt.Printf("%s: %s", string(p), line)
		}
	}
	return len(b), nil
}
