package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

// objectSizePhase measures what one retained one-pair deletion stores: it
// starts the manager (receiver and controllers), sends one callback through
// the receiver to a config with a job step and an http step (to a sink in
// this process), plays the Job controller (the test control plane runs
// none) to complete the Job, waits until the FriendDeletion is Succeeded
// and its finished Job deleted, and sums the JSON, as the API server serves
// and stores it, of every object left for it: the FriendDeletion, its Jobs
// and ConfigMaps, and the Events about it. Pods are not counted: no pod
// runs here; in a cluster, a Job's pods go with it.
func (b *bench) objectSizePhase() error {
	bins := [][2]string{{"current", b.bin}}
	if b.baseBin != "" {
		bins = [][2]string{{"baseline " + b.baselineRef, b.baseBin}, bins[0]}
	}
	for i, bin := range bins {
		if err := b.measureObjectSize(fmt.Sprintf("size-%d", i), bin[0], bin[1]); err != nil {
			return fmt.Errorf("%s manager: %w", bin[0], err)
		}
	}
	return nil
}

func (b *bench) measureObjectSize(ns, label, bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fmt.Printf("\nobject size: %s manager\n", label)
	if err := b.prepare(ns); err != nil {
		return err
	}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer sink.Close()
	c := b.env.Client
	config := &snsv1alpha1.CallbackConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1400000001", Cleanup: []snsv1alpha1.CleanupStep{
			{Name: "purge", Job: &batchv1.JobTemplateSpec{Spec: jobSpec()}},
			{Name: "notify", HTTP: &snsv1alpha1.HTTPStep{URL: sink.URL + "/friend-deleted"}},
		}},
	}
	if err := c.Create(ctx, config); err != nil {
		return err
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	receiver := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"--kubeconfig", b.kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--receiver-bind-address", receiver, "--watch-namespaces", ns, "--zap-log-level", "error"}, b.managerArgs...)
	mgr := exec.Command(bin, args...)
	mgr.Stdout, mgr.Stderr = os.Stdout, os.Stderr
	if err := mgr.Start(); err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	defer func() { _ = mgr.Process.Kill(); _ = mgr.Wait() }()

	// One callback, as the IM backend sends it, retried until the
	// receiver is up and the config ready.
	q := url.Values{"SdkAppid": {"1400000001"}, "CallbackCommand": {webhook.CallbackCommand}, "contenttype": {"json"},
		"ClientIP": {"203.0.113.7"}, "OptPlatform": {"RESTAPI"}, "RequestId": {"req-7f3a9c21"}}
	body := fmt.Sprintf(`{"CallbackCommand":%q,"PairList":[{"From_Account":"user00001","To_Account":"friend00001"}]}`, webhook.CallbackCommand)
	u := "http://" + receiver + webhook.Path(ns, "app") + "?" + q.Encode()
	if err := poll(ctx, func() (bool, error) {
		resp, err := http.Post(u, "application/json", strings.NewReader(body))
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(raw), `"ActionStatus":"OK"`), nil
	}); err != nil {
		return fmt.Errorf("sending the callback: %w", err)
	}

	var fd snsv1alpha1.FriendDeletion
	if err := poll(ctx, func() (bool, error) {
		var list snsv1alpha1.FriendDeletionList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) != 1 {
			return false, err
		}
		fd = list.Items[0]
		return true, nil
	}); err != nil {
		return fmt.Errorf("waiting for the FriendDeletion: %w", err)
	}
	var job batchv1.Job
	if err := poll(ctx, func() (bool, error) {
		var jobs batchv1.JobList
		if err := c.List(ctx, &jobs, client.InNamespace(ns), client.MatchingLabels{snsv1alpha1.LabelFriendDeletion: fd.Name}); err != nil || len(jobs.Items) == 0 {
			return false, err
		}
		job = jobs.Items[0]
		return true, nil
	}); err != nil {
		return fmt.Errorf("waiting for the Job: %w", err)
	}
	if err := completeJob(ctx, c, &job); err != nil {
		return err
	}
	if err := poll(ctx, func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&fd), &fd); err != nil {
			return false, err
		}
		return fd.Status.Phase == snsv1alpha1.PhaseSucceeded, nil
	}); err != nil {
		return fmt.Errorf("waiting for Succeeded (phase %q): %w", fd.Status.Phase, err)
	}
	// The finished Job is deleted once its outcome is recorded; give the
	// manager a few seconds to do so and anything else it would write.
	_ = poll(ctx, func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(&job), &batchv1.Job{})
		return client.IgnoreNotFound(err) == nil && err != nil, nil
	})
	time.Sleep(3 * time.Second)

	return b.reportObjectSizes(ctx, ns, fd.Name)
}

// reportObjectSizes prints the JSON size of what is stored for the
// FriendDeletion name, with the parts of the FriendDeletion itself.
func (b *bench) reportObjectSizes(ctx context.Context, ns, name string) error {
	rc := b.cs.CoreV1().RESTClient()
	raw, err := rc.Get().AbsPath("/apis/sns.imcallback.io/v1alpha1/namespaces", ns, "frienddeletions", name).DoRaw(ctx)
	if err != nil {
		return err
	}
	var parts struct {
		Metadata struct {
			ManagedFields []json.RawMessage `json:"managedFields"`
		} `json:"metadata"`
		Spec   json.RawMessage `json:"spec"`
		Status json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return err
	}
	mf := 0
	var managers []string
	for _, m := range parts.Metadata.ManagedFields {
		mf += len(m)
		var e metav1.ManagedFieldsEntry
		_ = json.Unmarshal(m, &e)
		managers = append(managers, fmt.Sprintf("%s %s%s (%d B)", e.Manager, e.Operation, sub(e.Subresource), len(m)))
	}
	fmt.Printf("object size: FriendDeletion %d B of JSON: managedFields %d B in %d entries [%s], spec %d B, status %d B\n",
		len(raw), mf, len(parts.Metadata.ManagedFields), strings.Join(managers, "; "), len(parts.Spec), len(parts.Status))
	fmt.Printf("object size: the FriendDeletion as stored:\n%s\n", raw)

	total := len(raw)
	sel := snsv1alpha1.LabelFriendDeletion + "=" + name
	for _, list := range []struct{ what, path string }{
		{"Jobs", "/apis/batch/v1/namespaces/" + ns + "/jobs"},
		{"Pods", "/api/v1/namespaces/" + ns + "/pods"},
		{"ConfigMaps", "/api/v1/namespaces/" + ns + "/configmaps"},
	} {
		n, size, err := listSize(ctx, b, list.path, "labelSelector", sel)
		if err != nil {
			return err
		}
		fmt.Printf("object size: %s of the FriendDeletion: %d, %d B\n", list.what, n, size)
		total += size
	}
	n, size, err := listSize(ctx, b, "/apis/events.k8s.io/v1/namespaces/"+ns+"/events", "fieldSelector", "regarding.name="+name)
	if err != nil {
		return err
	}
	fmt.Printf("object size: Events about the FriendDeletion: %d, %d B\n", n, size)
	total += size
	fmt.Printf("object size: stored for one retained one-pair deletion: %d B (target <= 4096 B)\n", total)
	return nil
}

// listSize lists path with one selector and returns the count of items and
// the sum of their JSON sizes.
func listSize(ctx context.Context, b *bench, path, selKind, sel string) (int, int, error) {
	raw, err := b.cs.CoreV1().RESTClient().Get().AbsPath(path).Param(selKind, sel).SetHeader("Accept", "application/json").DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("listing %s: %w", path, err)
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return 0, 0, err
	}
	size := 0
	for _, it := range list.Items {
		size += len(it)
	}
	return len(list.Items), size, nil
}

func sub(s string) string {
	if s == "" {
		return ""
	}
	return " " + s
}

// completeJob plays the Job controller: the Job ran its one pod to success.
func completeJob(ctx context.Context, c client.Client, job *batchv1.Job) error {
	now := metav1.Now()
	cond := func(t batchv1.JobConditionType) batchv1.JobCondition {
		return batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now}
	}
	return poll(ctx, func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(job), job); err != nil {
			return false, err
		}
		if job.Status.StartTime == nil {
			job.Status.StartTime = &now
		}
		job.Status.Active, job.Status.Succeeded, job.Status.CompletionTime = 0, 1, &now
		job.Status.Conditions = []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet), cond(batchv1.JobComplete)}
		return c.Status().Update(ctx, job) == nil, nil
	})
}

// poll calls f every 100ms until it reports done, returns an error, or ctx
// ends.
func poll(ctx context.Context, f func() (bool, error)) error {
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
