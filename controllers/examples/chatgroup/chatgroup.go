// Package chatgroup is a worked example of a cleanup step written outside
// the operator's module: a reconciler for external steps named
// "chat-group" that removes each deleted friendship from a chat group
// through a REST call, one call per pair.
//
// Use it from a CallbackConfig with
//
//	cleanup:
//	- name: chat-group
//	  external:
//	    deadline: 1h
//	    params:
//	      endpoint: https://chat.example.com/api
//	      group: all-staff
//
// For each pair it POSTs {"from": ..., "to": ...} to
// <endpoint>/groups/<group>/remove-pair with an Idempotency-Key header. A 2xx
// or 404 (nothing to remove) answer is done; 408, 429, 5xx and network
// errors are retried (after Retry-After when the service sends one); any
// other answer fails the step. The index of the next pair is kept as the
// step's checkpoint, so a restarted manager goes on where the last one
// stopped instead of calling the service again for every pair.
//
// The README's section "Writing a reconciler" walks through this file, and
// cmd/manager is the binary a team builds from it.
package chatgroup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
)

// StepName is the name of the external step this reconciler does.
const StepName = "chat-group"

// Params of the step (external.params in the CallbackConfig).
const (
	// ParamEndpoint is the chat service's base URL, http or https.
	ParamEndpoint = "endpoint"
	// ParamGroup is the id of the group to remove the pairs from.
	ParamGroup = "group"
)

// CheckpointEvery is how many pairs are removed between two checkpoints.
// Each checkpoint is one write to the API server: 20 for 2000 pairs.
const CheckpointEvery = 100

// SetupWithManager registers the reconciler for the "chat-group" steps.
func SetupWithManager(mgr ctrl.Manager) error {
	return cleanup.NewControllerManagedBy(mgr, StepName).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(&Reconciler{HTTP: &http.Client{Timeout: 10 * time.Second}})
}

// Reconciler removes the pairs of each FriendDeletion from a chat group.
type Reconciler struct {
	// HTTP sends the calls.
	HTTP *http.Client
}

// Reconcile removes the pairs from the checkpoint on, one call each, and
// reports the step Succeeded after the last one.
func (r *Reconciler) Reconcile(ctx context.Context, step *cleanup.Step) (ctrl.Result, error) {
	endpoint, group := step.Params[ParamEndpoint], step.Params[ParamGroup]
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ctrl.Result{}, step.Fail(ctx, fmt.Sprintf("params.%s must be an http or https URL, not %q.", ParamEndpoint, endpoint))
	}
	if group == "" {
		return ctrl.Result{}, step.Fail(ctx, fmt.Sprintf("params.%s is not set.", ParamGroup))
	}
	target := strings.TrimSuffix(endpoint, "/") + "/groups/" + url.PathEscape(group) + "/remove-pair"
	pairs := step.Pairs

	for i := nextPair(step.Checkpoint, len(pairs)); i < len(pairs); i++ {
		if i > 0 && i%CheckpointEvery == 0 && step.Checkpoint != checkpoint(i) {
			step.Checkpoint = checkpoint(i)
			if err := step.Progress(ctx, fmt.Sprintf("Removed %d of %d pairs from group %s.", i, len(pairs), group)); err != nil {
				return ctrl.Result{}, err
			}
		}
		key := fmt.Sprintf("%s-%d", step.FriendDeletion.UID, i)
		res, err := r.removePair(ctx, target, key, pairs[i].From, pairs[i].To)
		switch {
		case err != nil && ctx.Err() != nil:
			// The manager is stopping; the next one resumes from the last
			// checkpoint.
			return ctrl.Result{}, ctx.Err()
		case err != nil:
			step.Checkpoint = checkpoint(i)
			return step.Retry(ctx, fmt.Sprintf("Removing pair %d of %d: %v", i+1, len(pairs), err), backoff(step.Status.Attempts))
		case res.retryAfter > 0:
			step.Checkpoint = checkpoint(i)
			return step.Retry(ctx, fmt.Sprintf("Removing pair %d of %d: %s", i+1, len(pairs), res.status), res.retryAfter)
		case res.retryable:
			step.Checkpoint = checkpoint(i)
			return step.Retry(ctx, fmt.Sprintf("Removing pair %d of %d: %s", i+1, len(pairs), res.status), backoff(step.Status.Attempts))
		case !res.done:
			return ctrl.Result{}, step.Fail(ctx, fmt.Sprintf("Removing pair %d of %d: %s", i+1, len(pairs), res.status))
		}
	}
	step.Checkpoint = checkpoint(len(pairs))
	return ctrl.Result{}, step.Succeed(ctx, fmt.Sprintf("Removed %d pairs from group %s.", len(pairs), group))
}

// result is what one call's answer means.
type result struct {
	// done: removed, or there was nothing to remove.
	done bool
	// retryable: worth another try later.
	retryable bool
	// retryAfter is the wait the service asked for, if any.
	retryAfter time.Duration
	// status describes the answer, for the step's message.
	status string
}

// removePair makes one call. An error means no answer (network, timeout).
func (r *Reconciler) removePair(ctx context.Context, target, key, from, to string) (result, error) {
	body, err := json.Marshal(map[string]string{"from": from, "to": to})
	if err != nil {
		return result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	res := result{status: fmt.Sprintf("chat service answered %s", resp.Status)}
	if s := strings.TrimSpace(string(snippet)); s != "" && resp.StatusCode >= 300 {
		res.status += ": " + s
	}
	switch code := resp.StatusCode; {
	case code < 300 || code == http.StatusNotFound:
		res.done = true
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		res.retryable = true
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			res.retryAfter = min(time.Duration(secs)*time.Second, maxBackoff)
		}
	}
	return res, nil
}

// maxBackoff bounds the wait between two attempts.
const maxBackoff = 5 * time.Minute

// backoff is the wait after the given number of earlier failed attempts:
// 1s, 2s, 4s, ... up to maxBackoff.
func backoff(attempts int32) time.Duration {
	if attempts >= 9 {
		return maxBackoff
	}
	return min(time.Second<<attempts, maxBackoff)
}

// checkpoint records that the pairs before index i are done.
func checkpoint(i int) string { return "next=" + strconv.Itoa(i) }

// nextPair is the index of the first pair not done yet by cp; 0 for no
// checkpoint or one it cannot read.
func nextPair(cp string, n int) int {
	rest, ok := strings.CutPrefix(cp, "next=")
	if !ok {
		return 0
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 {
		return 0
	}
	return min(i, n)
}
