// Package cleanup lets a team add its own cleanup step to the operator: a
// reconciler for the external steps of a given name.
//
// A CallbackConfig lists a step such as
//
//	cleanup:
//	- name: chat-group
//	  external:
//	    deadline: 1h
//	    params: {endpoint: "https://chat.example.com/api", group: "all-staff"}
//
// and the operator runs nothing for it: when a FriendDeletion reaches the
// step, the operator marks the step Running and waits. A StepReconciler
// registered under the step's name is called for each FriendDeletion whose
// step is Running, does the work, and reports the outcome with
// Step.Succeed, Step.Fail, Step.Retry or Step.Progress (or, from anywhere
// else, Report). The operator then updates the FriendDeletion's
// conditions, emits an Event and goes on with the next step.
//
//	err := cleanup.NewControllerManagedBy(mgr, "chat-group").
//		Complete(&Reconciler{HTTP: http.DefaultClient})
//
// See the README's section "Writing a reconciler" and the worked examples
// in controllers/examples.
package cleanup

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ctrl "sigs.k8s.io/controller-runtime"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// RequestAnnotation, set on a FriendDeletion to a new value (a timestamp,
// say), asks the reconcilers of its Running external steps to run again:
//
//	kubectl annotate fdel <name> --overwrite sns.imcallback.io/reconcile-request="$(date +%s)"
//
// Changes to the FriendDeletion's status, its own reports included, do not
// call a step reconciler again; this annotation, a RequeueAfter, an error
// and the watches added with Owns or Watches do.
const RequestAnnotation = "sns.imcallback.io/reconcile-request"

// StepReconciler does the work of one external cleanup step for one
// FriendDeletion. Reconcile is called while the step is Running: when the
// step starts (and for every Running step when the manager starts), when
// RequestAnnotation changes, when a watched object changes, when a returned
// RequeueAfter elapses, and after an error (with backoff). Its own reports
// do not call it again. Like any reconciler it must be idempotent: it may
// run again for work it already did, which Step.Checkpoint helps to skip.
//
// Return an error for a transient problem (it is retried with backoff), or
// Step.Retry to record a failed attempt and try again at a time you choose;
// report a failure for good with Step.Fail.
type StepReconciler interface {
	Reconcile(ctx context.Context, step *Step) (ctrl.Result, error)
}

// StepReconcilerFunc is a StepReconciler written as a function.
type StepReconcilerFunc func(ctx context.Context, step *Step) (ctrl.Result, error)

// Reconcile calls f.
func (f StepReconcilerFunc) Reconcile(ctx context.Context, step *Step) (ctrl.Result, error) {
	return f(ctx, step)
}

// Step is a Running external step of one FriendDeletion.
type Step struct {
	// Name is the step's name in the CallbackConfig.
	Name string
	// FriendDeletion is the object as last read (a copy you own). Its spec
	// holds the callback: SDKAppID, clientIP, optPlatform, and all the
	// pairs as received; do the work for Pairs, not spec.pairs.
	FriendDeletion *snsv1alpha1.FriendDeletion
	// Pairs is the pairs to clean up after: all of spec.pairs, or, when the
	// CallbackConfig verifies pairs with the IM backend (spec.verify), only
	// those whose friendship the IM backend confirmed gone. Pairs that are
	// still (or again) friendships are left out. A copy you own.
	Pairs []snsv1alpha1.FriendPair
	// Params is the step's external.params in the CallbackConfig, as the
	// config is now (a copy you own; empty when the config sets none).
	Params map[string]string
	// Status is the step's status as last read or written: startTime,
	// attempts, message, nextAttemptTime, checkpoint.
	Status snsv1alpha1.StepStatus
	// Checkpoint starts as the checkpoint last recorded (Status.Checkpoint).
	// Set it as the work goes on: the next Progress, Retry, Succeed or Fail
	// records it in the same write. At most MaxCheckpoint bytes.
	Checkpoint string

	client    client.Client
	apiReader client.Reader
}

// Succeed reports that the step did its work.
func (s *Step) Succeed(ctx context.Context, message string) error {
	return s.report(ctx, Succeeded(message))
}

// Fail reports that the step failed for good; the FriendDeletion fails.
func (s *Step) Fail(ctx context.Context, message string) error {
	return s.report(ctx, Failed(message))
}

// Progress updates the step's message (and checkpoint) while it keeps
// running. It writes nothing when neither changed.
func (s *Step) Progress(ctx context.Context, message string) error {
	return s.report(ctx, Progress(message))
}

// Retry records a failed attempt as the built-in http step does: attempts
// goes up by one, the message says what failed and when the next attempt
// is, nextAttemptTime is set, and the step's condition gets reason
// Retrying (with a Warning Event). It returns the result that calls
// Reconcile again after that wait, so a reconciler can end with
//
//	return step.Retry(ctx, "chat API answered 503", 30*time.Second)
//
// The step stays Running; only Fail ends it, and the config's deadline
// still applies. after must be positive.
func (s *Step) Retry(ctx context.Context, message string, after time.Duration) (ctrl.Result, error) {
	if err := s.report(ctx, Retry(message, after)); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

func (s *Step) report(ctx context.Context, o Outcome) error {
	if s.Checkpoint != s.Status.Checkpoint {
		cp := s.Checkpoint
		o.Checkpoint = &cp
	}
	if err := Report(ctx, s.client, s.apiReader, s.FriendDeletion, s.Name, o); err != nil {
		return err
	}
	if st := stepstatus.Find(s.FriendDeletion, s.Name); st != nil {
		s.Status = *st
	}
	return nil
}

// Builder builds the controller of one external step, like
// controller-runtime's builder: add watches, then Complete.
type Builder struct {
	mgr  manager.Manager
	step string
	b    *builder.Builder
}

// NewControllerManagedBy starts a controller for the external steps named
// step. It watches FriendDeletions for the step entering Running and for
// RequestAnnotation, not for every change of their status.
func NewControllerManagedBy(mgr manager.Manager, step string) *Builder {
	b := builder.ControllerManagedBy(mgr).
		Named("cleanup-step-"+step).
		For(&snsv1alpha1.FriendDeletion{}, builder.WithPredicates(stepTriggers(step)))
	return &Builder{mgr: mgr, step: step, b: b}
}

// Owns also reconciles the FriendDeletion that owns (as controller) an
// object of this kind when it changes, for example a ConfigMap the step
// creates with controllerutil.SetControllerReference.
func (b *Builder) Owns(obj client.Object, opts ...builder.OwnsOption) *Builder {
	b.b = b.b.Owns(obj, opts...)
	return b
}

// Watches adds any other watch; the handler enqueues FriendDeletions.
func (b *Builder) Watches(obj client.Object, h handler.EventHandler, opts ...builder.WatchesOption) *Builder {
	b.b = b.b.Watches(obj, h, opts...)
	return b
}

// WithOptions sets controller options such as MaxConcurrentReconciles.
func (b *Builder) WithOptions(o controller.Options) *Builder {
	b.b = b.b.WithOptions(o)
	return b
}

// Complete registers r with the manager.
func (b *Builder) Complete(r StepReconciler) error {
	return b.b.Complete(&adapter{
		client: b.mgr.GetClient(), apiReader: b.mgr.GetAPIReader(),
		step: b.step, r: r, now: time.Now,
	})
}

// adapter turns a StepReconciler into a controller-runtime reconciler.
type adapter struct {
	client    client.Client
	apiReader client.Reader
	step      string
	r         StepReconciler
	now       func() time.Time
}

// Reconcile calls the StepReconciler for a Running step whose next attempt
// (after a Retry) is due, with the config's params.
func (a *adapter) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	fd := &snsv1alpha1.FriendDeletion{}
	if err := a.client.Get(ctx, req.NamespacedName, fd); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	st := stepstatus.Find(fd, a.step)
	if !running(fd, a.step) {
		return ctrl.Result{}, nil
	}
	if st.NextAttemptTime != nil {
		if wait := st.NextAttemptTime.Sub(a.now()); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	cfg := &snsv1alpha1.CallbackConfig{}
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: fd.Namespace, Name: fd.Spec.ConfigName}, cfg); err != nil {
		// Without its config the FriendDeletion reconciler fails the step.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var params map[string]string
	for _, s := range cfg.Spec.Cleanup {
		if s.Name != a.step {
			continue
		}
		if s.External == nil {
			return ctrl.Result{}, nil // no longer external: the FriendDeletion reconciler fails it
		}
		params = make(map[string]string, len(s.External.Params))
		for k, v := range s.External.Params {
			params[k] = v
		}
	}
	if params == nil {
		return ctrl.Result{}, nil // removed from the config: likewise
	}
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("step", a.step))
	return a.r.Reconcile(ctx, &Step{
		Name: a.step, FriendDeletion: fd, Params: params, Status: *st, Checkpoint: st.Checkpoint,
		Pairs:  append([]snsv1alpha1.FriendPair(nil), stepstatus.Pairs(fd)...),
		client: a.client, apiReader: a.apiReader,
	})
}
