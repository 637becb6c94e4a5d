// Package controllers holds the operator's reconcilers: FriendDeletion,
// which runs each accepted callback's cleanup steps, and CallbackConfig,
// which reports whether a config can accept callbacks.
//
// controllers/manager.Run, which main.go calls, sets them up with
// SetupWithManager. The package cleanup beside this one is the API for
// writing a reconciler of your own cleanup step.
package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// The controllers' permissions, generated into config/rbac/role.yaml
// (`make manifests`, paths=./controllers/...). The callback receiver's are
// generated apart, from webhook/. frienddeletions/finalizers update is what
// OwnerReferencesPermissionEnforcement asks of a controller reference on a
// Job or ConfigMap; status is only ever patched. A batch Job's pairs
// ConfigMap is deleted with the finished Job.
//
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=frienddeletions,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=frienddeletions/status,verbs=patch
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=frienddeletions/finalizers,verbs=update
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=callbackconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=sns.imcallback.io,resources=callbackconfigs/status,verbs=patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Field indexes the reconcilers look objects up by.
const (
	// indexConfigName indexes FriendDeletions by spec.configName.
	indexConfigName = "spec.configName"
	// indexUnfinishedConfigName indexes the FriendDeletions that have not
	// finished by spec.configName: a config's change concerns those
	// alone, and they are few beside the retained finished ones.
	indexUnfinishedConfigName = "unfinished.spec.configName"
	// indexTokenSecret indexes CallbackConfigs by their token Secret's name.
	indexTokenSecret = "spec.auth.tokenSecretRef.name"
	// indexVerifySecret indexes CallbackConfigs by their secret key's
	// Secret name (spec.verify).
	indexVerifySecret = "spec.verify.secretKeyRef.name"
)

// SetupWithManager sets up the FriendDeletion and CallbackConfig reconcilers.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	opts = opts.withDefaults()
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.FriendDeletion{}, indexConfigName, func(o client.Object) []string {
		return []string{o.(*snsv1alpha1.FriendDeletion).Spec.ConfigName}
	}); err != nil {
		return fmt.Errorf("indexing FriendDeletions by config: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.FriendDeletion{}, indexBatchCandidate, func(o client.Object) []string {
		if k := batchCandidateKey(o.(*snsv1alpha1.FriendDeletion)); k != "" {
			return []string{k}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing FriendDeletions by the step they are ready for: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.FriendDeletion{}, indexRunningJob, func(o client.Object) []string {
		return runningJobs(o.(*snsv1alpha1.FriendDeletion))
	}); err != nil {
		return fmt.Errorf("indexing FriendDeletions by their running Jobs: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.FriendDeletion{}, indexCreatedJob, func(o client.Object) []string {
		return createdJobs(o.(*snsv1alpha1.FriendDeletion))
	}); err != nil {
		return fmt.Errorf("indexing FriendDeletions by the Jobs they record as created: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.FriendDeletion{}, indexUnfinishedConfigName, unfinishedConfigName); err != nil {
		return fmt.Errorf("indexing unfinished FriendDeletions by config: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.CallbackConfig{}, indexTokenSecret, func(o client.Object) []string {
		if a := o.(*snsv1alpha1.CallbackConfig).Spec.Auth; a != nil {
			return []string{a.TokenSecretRef.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing CallbackConfigs by token Secret: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &snsv1alpha1.CallbackConfig{}, indexVerifySecret, func(o client.Object) []string {
		if v := o.(*snsv1alpha1.CallbackConfig).Spec.Verify; v != nil {
			return []string{v.SecretKeyRef.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing CallbackConfigs by secret key Secret: %w", err)
	}

	vm, err := newVerifyMetrics()
	if err != nil {
		return fmt.Errorf("registering the verification metrics: %w", err)
	}
	fdr := &FriendDeletionReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("frienddeletion-controller"),
		HTTP:          newHTTPClient(opts),
		Options:       opts,
		VerifyMetrics: vm,
		wake:          make(chan ctrlevent.GenericEvent, 1024),
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("frienddeletion").
		For(&snsv1alpha1.FriendDeletion{}, builder.WithPredicates(fdr.wakeups())).
		Watches(&batchv1.Job{}, fdr.jobEventHandler(mgr)).
		WatchesRawSource(source.Channel(fdr.wake, &handler.EnqueueRequestForObject{})).
		Watches(&snsv1alpha1.CallbackConfig{},
			handler.EnqueueRequestsFromMapFunc(fdr.unfinishedOfConfig),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A changed secret key may be the one the IM backend accepts.
		WatchesMetadata(&corev1.Secret{},
			handler.EnqueueRequestsFromMapFunc(fdr.unverifiedOfSecret),
			builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.FriendDeletionConcurrency,
			RateLimiter:             opts.rateLimiter(),
		}).
		Complete(fdr)
	if err != nil {
		return fmt.Errorf("setting up the FriendDeletion reconciler: %w", err)
	}

	ccr := &CallbackConfigReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("callbackconfig-controller"),
		Options:   opts,
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("callbackconfig").
		For(&snsv1alpha1.CallbackConfig{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(ccr.configsOfSecret)).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.CallbackConfigConcurrency,
			RateLimiter:             opts.rateLimiter(),
		}).
		Complete(ccr)
	if err != nil {
		return fmt.Errorf("setting up the CallbackConfig reconciler: %w", err)
	}
	if opts.ReceiverServiceAccount != "" {
		sa, err := ParseServiceAccount(opts.ReceiverServiceAccount)
		if err != nil {
			return fmt.Errorf("--receiver-service-account: %w", err)
		}
		if err := setupReceiverAccess(mgr, sa, opts); err != nil {
			return fmt.Errorf("setting up the receiver's access to token Secrets: %w", err)
		}
	}
	if err := addMetrics(mgr, opts); err != nil {
		return fmt.Errorf("adding the FriendDeletion metrics: %w", err)
	}
	return nil
}

// CacheByObject narrows the manager's cache to the Jobs and ConfigMaps the
// operator made (those carrying the FriendDeletion label), so that other
// Jobs and ConfigMaps in the cluster cost no memory, and keeps only what the
// reconcilers read of them: a cached Job has no pod template (spec.template
// is empty) and a cached ConfigMap no data. Roles and RoleBindings are
// cached only when they grant the receiver a token Secret (see
// receiver_access.go). Read those from the API server
// (mgr.GetAPIReader()) if you need them. managedFields are stripped too.
// A manager holds every retained FriendDeletion: a finished one is cached
// as its summary (metadata, spec.configName, phase, times, each step's
// name, type, phase and jobName; no pairs, messages or conditions), an
// unfinished one whole; both share their repeated strings and labels maps
// (see slimFriendDeletion). Pass it as cache.Options.ByObject.
func CacheByObject() map[client.Object]cache.ByObject {
	owned, err := labels.NewRequirement(snsv1alpha1.LabelFriendDeletion, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant label key
	}
	sel := labels.NewSelector().Add(*owned)
	byObject := map[client.Object]cache.ByObject{
		&batchv1.Job{}:      {Label: sel, Transform: slimJob},
		&corev1.ConfigMap{}: {Label: sel, Transform: slimConfigMap},
		// Every FriendDeletion is cached, finished ones (as summaries)
		// until their retention ends; see slimFriendDeletion.
		&snsv1alpha1.FriendDeletion{}: {Transform: slimFriendDeletion},
	}
	for obj, bo := range receiverAccessCache() {
		byObject[obj] = bo
	}
	return byObject
}

// unfinishedConfigName is the indexUnfinishedConfigName of a FriendDeletion:
// its config's name until it finishes, then none.
func unfinishedConfigName(o client.Object) []string {
	if fd := o.(*snsv1alpha1.FriendDeletion); !fd.Status.Phase.Finished() {
		return []string{fd.Spec.ConfigName}
	}
	return nil
}

// unfinishedOfConfig maps a CallbackConfig to its FriendDeletions that have
// not finished: a deleted config, or a changed step, changes what they do.
// It reads them through indexUnfinishedConfigName, without copies: a
// config seen at start-up, or changed, must not copy the tens of thousands
// of finished ones its retention keeps.
func (r *FriendDeletionReconciler) unfinishedOfConfig(ctx context.Context, o client.Object) []reconcile.Request {
	var list snsv1alpha1.FriendDeletionList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexUnfinishedConfigName: o.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing FriendDeletions of a CallbackConfig", "config", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for _, fd := range list.Items {
		if !fd.Status.Phase.Finished() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&fd)})
		}
	}
	return reqs
}

// configsOfSecret maps a Secret to the CallbackConfigs whose token or
// secret key (spec.verify) it holds.
func (r *CallbackConfigReconciler) configsOfSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	seen := map[string]bool{}
	for _, index := range []string{indexTokenSecret, indexVerifySecret} {
		var list snsv1alpha1.CallbackConfigList
		if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing CallbackConfigs of a Secret", "secret", o.GetName())
			return nil
		}
		for _, c := range list.Items {
			if !seen[c.Name] {
				seen[c.Name] = true
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
			}
		}
	}
	return reqs
}

// slimJob drops what the reconcilers never read of a cached Job.
func slimJob(obj any) (any, error) {
	if job, ok := obj.(*batchv1.Job); ok {
		job.ManagedFields = nil
		job.Spec.Template = corev1.PodTemplateSpec{}
	}
	return obj, nil
}

// slimConfigMap drops what the reconcilers never read of a cached ConfigMap.
func slimConfigMap(obj any) (any, error) {
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		cm.ManagedFields = nil
		cm.Data, cm.BinaryData = nil, nil
	}
	return obj, nil
}

// jobEventHandler enqueues the FriendDeletions that own a Job (the one it
// is for, or every member of a batch Job) when
// what the Job tells the step changes (jobStepStatus: a pod failed, the Job
// completed or failed) and when the Job is deleted. A Job's creation is no
// news unless the Job is first seen finished or with a failed pod (after a
// watch gap): the reconcile that created it recorded it first (intent).
// The progress in between (pods active, ready, terminating) changes nothing
// the step shows and wakes nothing.
//
// A deletion of a Job by anyone else is noted (see jobDeletions), so that
// the reconcile fails the step instead of creating the Job again; the
// reconciler's own deletions of finished Jobs wake nothing.
func (r *FriendDeletionReconciler) jobEventHandler(mgr ctrl.Manager) handler.EventHandler {
	// Every FriendDeletion owner: the one a Job is for, or every member of
	// a batch Job.
	owner := handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &snsv1alpha1.FriendDeletion{})
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e ctrlevent.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			// A Job first seen with news already (a relist after a watch
			// gap, a restart) is news; one just created is not.
			if job, ok := e.Object.(*batchv1.Job); ok && jobNewsChanged(&batchv1.Job{ObjectMeta: job.ObjectMeta}, job) {
				owner.Create(ctx, e, q)
			}
		},
		UpdateFunc: func(ctx context.Context, e ctrlevent.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			oldJob, ok1 := e.ObjectOld.(*batchv1.Job)
			newJob, ok2 := e.ObjectNew.(*batchv1.Job)
			if ok1 && ok2 && !jobNewsChanged(oldJob, newJob) {
				return
			}
			owner.Update(ctx, e, q)
		},
		DeleteFunc: func(ctx context.Context, e ctrlevent.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if _, ours := r.ourDeletions.LoadAndDelete(e.Object.GetUID()); ours {
				return // a finished Job deleted once its outcome was recorded
			}
			for _, ref := range e.Object.GetOwnerReferences() {
				if ref.Kind == "FriendDeletion" {
					r.jobDeletions().note(types.NamespacedName{Namespace: e.Object.GetNamespace(), Name: ref.Name}, e.Object.GetName())
				}
			}
			owner.Delete(ctx, e, q)
		},
		GenericFunc: owner.Generic,
	}
}

// jobNewsChanged reports whether a Job update changes what its step shows.
func jobNewsChanged(oldJob, newJob *batchv1.Job) bool {
	op, or, om := jobStepStatus(oldJob)
	np, nr, nm := jobStepStatus(newJob)
	return op != np || or != nr || om != nm || !newJob.DeletionTimestamp.IsZero()
}

// wakeups is the FriendDeletion watch's filter: a FriendDeletion is
// reconciled when it is created (and, at start-up, for every one stored),
// when its spec changes (generation), when it is being deleted, when the
// annotation cleanup.RequestAnnotation changes, and when its status was
// written by anyone but this reconciler: an external step's reconciler
// reporting, an http attempt's outcome, a person. The reconciler's own
// status writes wake nothing (see ownWrites): what it wrote, it already
// acted on.
func (r *FriendDeletionReconciler) wakeups() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e ctrlevent.UpdateEvent) bool {
			o, n := e.ObjectOld, e.ObjectNew
			own := r.ownWrites().consume(client.ObjectKeyFromObject(n), n.GetResourceVersion())
			return !own ||
				o.GetGeneration() != n.GetGeneration() ||
				!n.GetDeletionTimestamp().IsZero() ||
				o.GetAnnotations()[requestAnnotation] != n.GetAnnotations()[requestAnnotation] ||
				o.GetResourceVersion() == n.GetResourceVersion() // a resync: a safety net, rare
		},
		DeleteFunc: func(e ctrlevent.DeleteEvent) bool {
			key := client.ObjectKeyFromObject(e.Object)
			r.ownWrites().forget(key)
			r.jobDeletions().forget(key)
			r.batchState().forget(key)
			return false // nothing is left to do for a deleted FriendDeletion
		},
	}
}
