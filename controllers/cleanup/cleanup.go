// Package cleanup lets a team add its own cleanup step to the operator: a
// reconciler for the external steps of a given name.
//
// A CallbackConfig lists a step such as
//
//	cleanup:
//	- name: audit
//	  external: {deadline: 10m}
//
// and the operator runs nothing for it: when a FriendDeletion reaches the
// step, the operator marks the step Running and waits. A StepReconciler
// registered under the step's name is called for each FriendDeletion whose
// step is Running, does the work, and reports the outcome with
// Step.Succeed, Step.Fail or Step.Progress (or, from anywhere else, Report).
// The operator then updates the FriendDeletion's conditions, emits an
// Event and goes on with the next step.
//
//	err := cleanup.NewControllerManagedBy(mgr, "audit").
//		Owns(&corev1.ConfigMap{}).
//		Complete(&AuditReconciler{Client: mgr.GetClient()})
//
// See the README's section "Writing a reconciler" and the worked example in
// controllers/examples/audit.
package cleanup

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ctrl "sigs.k8s.io/controller-runtime"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// StepReconciler does the work of one external cleanup step for one
// FriendDeletion. Reconcile is called while the step is Running: when it
// starts, whenever the FriendDeletion or a watched object changes, and when
// a returned RequeueAfter elapses. Like any reconciler it must be
// idempotent: it may run again for work it already did.
//
// Return an error for a transient problem (it is retried with backoff);
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
	// holds the callback: SDKAppID, pairs, clientIP, optPlatform.
	FriendDeletion *snsv1alpha1.FriendDeletion
	// Status is the step's status: startTime, message.
	Status snsv1alpha1.StepStatus

	client client.Client
}

// Succeed reports that the step did its work.
func (s *Step) Succeed(ctx context.Context, message string) error {
	return s.report(ctx, Succeeded(message))
}

// Fail reports that the step failed for good; the FriendDeletion fails.
func (s *Step) Fail(ctx context.Context, message string) error {
	return s.report(ctx, Failed(message))
}

// Progress updates the step's message while it keeps running.
func (s *Step) Progress(ctx context.Context, message string) error {
	return s.report(ctx, Progress(message))
}

func (s *Step) report(ctx context.Context, o Outcome) error {
	if err := Report(ctx, s.client, s.FriendDeletion, s.Name, o); err != nil {
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
// step. It watches FriendDeletions whose step of that name is Running.
func NewControllerManagedBy(mgr manager.Manager, step string) *Builder {
	b := builder.ControllerManagedBy(mgr).
		Named("cleanup-step-"+step).
		For(&snsv1alpha1.FriendDeletion{}, builder.WithPredicates(StepRunning(step)))
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
	return b.b.Complete(&adapter{client: b.mgr.GetClient(), step: b.step, r: r})
}

// StepRunning selects FriendDeletions whose external step of that name is
// Running.
func StepRunning(step string) predicate.Predicate {
	return predicate.NewPredicateFuncs(func(obj client.Object) bool {
		fd, ok := obj.(*snsv1alpha1.FriendDeletion)
		if !ok {
			return false
		}
		st := stepstatus.Find(fd, step)
		return st != nil && st.Type == snsv1alpha1.StepTypeExternal && st.Phase == snsv1alpha1.PhaseRunning
	})
}

// adapter turns a StepReconciler into a controller-runtime reconciler.
type adapter struct {
	client client.Client
	step   string
	r      StepReconciler
}

func (a *adapter) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	fd := &snsv1alpha1.FriendDeletion{}
	if err := a.client.Get(ctx, req.NamespacedName, fd); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	st := stepstatus.Find(fd, a.step)
	if st == nil || st.Type != snsv1alpha1.StepTypeExternal || st.Phase != snsv1alpha1.PhaseRunning || !fd.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("step", a.step))
	return a.r.Reconcile(ctx, &Step{Name: a.step, FriendDeletion: fd, Status: *st, client: a.client})
}
