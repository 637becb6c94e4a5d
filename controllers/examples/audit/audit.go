// Package audit is the worked example of the cleanup step API: a reconciler
// for external steps named "audit" that keeps an audit record of each
// FriendDeletion as a ConfigMap beside it.
//
// Use it from a CallbackConfig with
//
//	cleanup:
//	- name: audit
//	  external: {deadline: 5m}
//
// The README's section "Writing a reconciler" walks through this file.
package audit

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/cleanup"
)

// StepName is the name of the external step this reconciler does.
const StepName = "audit"

// RecordKey is the ConfigMap key that holds the audit record.
const RecordKey = "record.txt"

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create

// SetupWithManager registers the reconciler for the "audit" steps.
func SetupWithManager(mgr ctrl.Manager) error {
	return cleanup.NewControllerManagedBy(mgr, StepName).
		Owns(&corev1.ConfigMap{}).
		Complete(&Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()})
}

// Reconciler writes one audit record per FriendDeletion.
type Reconciler struct {
	client.Client
	// APIReader reads from the API server. The manager's cache holds only
	// ConfigMaps with the FriendDeletion label, so a ConfigMap of someone
	// else's that happens to have the record's name is seen only here.
	APIReader client.Reader
}

// Reconcile creates the FriendDeletion's audit ConfigMap, once, and reports
// the step Succeeded. The ConfigMap has a name made from the
// FriendDeletion's, so running again (after a restart, say) finds it
// instead of writing a second record.
func (r *Reconciler) Reconcile(ctx context.Context, step *cleanup.Step) (ctrl.Result, error) {
	fd := step.FriendDeletion
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fd.Name + "-audit",
			Namespace: fd.Namespace,
			// The operator's cache sees only ConfigMaps with this label.
			Labels: map[string]string{
				snsv1alpha1.LabelFriendDeletion: fd.Name,
				snsv1alpha1.LabelStep:           step.Name,
			},
		},
		Data: map[string]string{RecordKey: record(fd, step.Pairs)},
	}
	if err := controllerutil.SetControllerReference(fd, cm, r.Scheme()); err != nil {
		return ctrl.Result{}, err
	}
	err := r.Create(ctx, cm)
	if apierrors.IsAlreadyExists(err) {
		// Its metadata says whose it is; its data is not needed.
		existing := &metav1.PartialObjectMetadata{}
		existing.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cm), existing); err != nil {
			return ctrl.Result{}, err
		}
		if !metav1.IsControlledBy(existing, fd) {
			return ctrl.Result{}, step.Fail(ctx, fmt.Sprintf("ConfigMap %s exists and is not this FriendDeletion's audit record.", cm.Name))
		}
	} else if err != nil {
		return ctrl.Result{}, err // retried with backoff
	}
	ctrl.LoggerFrom(ctx).Info("audit record written", "configMap", cm.Name, "pairs", len(step.Pairs))
	return ctrl.Result{}, step.Succeed(ctx, fmt.Sprintf("Audit record in ConfigMap %s (%d pairs).", cm.Name, len(step.Pairs)))
}

// record is the audit text: who asked, from where, and each deleted pair
// cleaned up after (step.Pairs: those verified gone, when the config
// verifies).
func record(fd *snsv1alpha1.FriendDeletion, pairs []snsv1alpha1.FriendPair) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sdkAppID=%s clientIP=%s optPlatform=%s receivedAt=%s\n",
		fd.Spec.SDKAppID, fd.Spec.ClientIP, fd.Spec.OptPlatform, fd.Spec.ReceivedAt.UTC().Format("2006-01-02T15:04:05Z"))
	for _, p := range pairs {
		fmt.Fprintf(&b, "%s\t%s\n", p.From, p.To)
	}
	return b.String()
}
