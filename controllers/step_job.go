package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// The Job contract: what every container of a job step's Job gets. See
// the README's section "The Job contract".
const (
	EnvFriendDeletionName      = "FRIEND_DELETION_NAME"
	EnvFriendDeletionNamespace = "FRIEND_DELETION_NAMESPACE"
	EnvSDKAppID                = "SDKAPPID"
	EnvPairCount               = "PAIR_COUNT"
	EnvFromAccount             = "FROM_ACCOUNT"
	EnvToAccount               = "TO_ACCOUNT"
	EnvPairsFile               = "PAIRS_FILE"

	// PairsKey is the pairs file's name, and its key in the pairs ConfigMap.
	PairsKey = "pairs.json"
	// PairsMountPath is where the pairs volume is mounted.
	PairsMountPath = "/etc/friend-deletion"
	// PairsFile is the path in PAIRS_FILE.
	PairsFile = PairsMountPath + "/" + PairsKey
	// PairsAnnotation holds the pairs file on the pod template of a Job
	// whose pairs fit in InlinePairsLimit bytes; the downward API mounts it.
	PairsAnnotation = "sns.imcallback.io/pairs"
	// InlinePairsLimit is the largest pairs file carried in PairsAnnotation.
	// A larger one goes in a ConfigMap: pods and Jobs are read by many
	// watchers and should stay small.
	InlinePairsLimit = 4096
	// pairsVolume is the name of the pod volume holding the pairs file.
	pairsVolume = "friend-deletion-pairs"
)

// reconcileJobStep creates the step's Job (and pairs ConfigMap), once, and
// then follows the Job: the step is Running while the Job runs (Retrying
// after a pod failed), Succeeded when the Job is Complete, Failed when it is
// Failed. spec is nil for a running step whose definition left the config:
// its Job is followed but never created.
//
// Sets the step condition: Running, Retrying, Succeeded or Failed.
func (r *FriendDeletionReconciler) reconcileJobStep(ctx context.Context, fd *snsv1alpha1.FriendDeletion, spec *snsv1alpha1.CleanupStep, st *snsv1alpha1.StepStatus) (ctrl.Result, error) {
	name := jobName(fd.Name, st.Name)
	job := &batchv1.Job{}
	err := r.Get(ctx, types.NamespacedName{Namespace: fd.Namespace, Name: name}, job)
	if apierrors.IsNotFound(err) && st.JobName != "" {
		// The cache may lag behind a Job created a moment ago.
		err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: fd.Namespace, Name: name}, job)
		if apierrors.IsNotFound(err) {
			stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed,
				fmt.Sprintf("Job %s was deleted before it finished.", name), r.now())
			return ctrl.Result{}, nil
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		if spec == nil || spec.Job == nil {
			return ctrl.Result{}, nil // reconcileStep fails such a step before it starts
		}
		created, err := r.createJob(ctx, fd, st.Name, spec.Job, name)
		if err != nil {
			return ctrl.Result{}, err
		}
		ctrl.LoggerFrom(ctx).V(1).Info("created Job", "job", name)
		if created {
			// The Job's create event reconciles this FriendDeletion again, at
			// low priority, and that reconcile records the Job in the
			// status. In a burst of FriendDeletions this creates every Job
			// before writing any status; a restart in between loses
			// nothing, as the Job's name is fixed.
			deferStatus(ctx)
			return ctrl.Result{}, nil
		}
		job = &batchv1.Job{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: fd.Namespace, Name: name}, job); err != nil {
			return ctrl.Result{}, fmt.Errorf("getting Job %s: %w", name, err)
		}
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("getting Job %s: %w", name, err)
	}
	if !metav1.IsControlledBy(job, fd) {
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed,
			fmt.Sprintf("Job %s exists and does not belong to this FriendDeletion.", name), r.now())
		return ctrl.Result{}, nil
	}
	st.JobName = name
	st.Attempts = 1
	phase, reason, msg := jobStepStatus(job)
	stepstatus.Mark(fd, st, phase, reason, msg, r.now())
	return ctrl.Result{}, nil
}

// createJob creates the Job, after the pairs ConfigMap when the pairs are
// too many to inline, and reports whether it created the Job. Both have
// deterministic names, so AlreadyExists means an earlier reconcile (perhaps
// of a manager since restarted) created them.
func (r *FriendDeletionReconciler) createJob(ctx context.Context, fd *snsv1alpha1.FriendDeletion, step string, tmpl *batchv1.JobTemplateSpec, name string) (bool, error) {
	pairs, err := json.Marshal(fd.Spec.Pairs)
	if err != nil {
		return false, fmt.Errorf("encoding pairs: %w", err)
	}
	if !inlinePairs(pairs) {
		cm, err := pairsConfigMap(fd, pairs, r.Scheme())
		if err != nil {
			return false, err
		}
		if err := r.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return false, fmt.Errorf("creating ConfigMap %s: %w", cm.Name, err)
		}
	}
	job, err := buildJob(fd, step, tmpl, name, pairs, r.Scheme())
	if err != nil {
		return false, err
	}
	switch err := r.Create(ctx, job); {
	case apierrors.IsAlreadyExists(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("creating Job %s: %w", name, err)
	}
	return true, nil
}

// jobStepStatus reads a Job's conditions into a step phase, condition
// reason and message.
func jobStepStatus(job *batchv1.Job) (snsv1alpha1.Phase, string, string) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return snsv1alpha1.PhaseSucceeded, snsv1alpha1.ReasonSucceeded, fmt.Sprintf("Job %s completed.", job.Name)
		case batchv1.JobFailed:
			msg := fmt.Sprintf("Job %s failed", job.Name)
			if c.Reason != "" {
				msg += ": " + c.Reason
			}
			if c.Message != "" {
				msg += ": " + c.Message
			}
			return snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, msg + "."
		}
	}
	if job.Status.Failed > 0 {
		return snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRetrying,
			fmt.Sprintf("Job %s is running; %d pod(s) failed so far (backoffLimit %d).", job.Name, job.Status.Failed, ptr.Deref(job.Spec.BackoffLimit, 6))
	}
	return snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, fmt.Sprintf("Job %s is running.", job.Name)
}

// childLabels are the labels on everything a FriendDeletion's steps create.
func childLabels(fd *snsv1alpha1.FriendDeletion, step string) map[string]string {
	l := map[string]string{
		snsv1alpha1.LabelFriendDeletion: fd.Name,
		snsv1alpha1.LabelConfig:         fd.Spec.ConfigName,
		snsv1alpha1.LabelSDKAppID:       fd.Spec.SDKAppID,
	}
	if step != "" {
		l[snsv1alpha1.LabelStep] = step
	}
	if len(fd.Spec.ConfigName) > 63 {
		delete(l, snsv1alpha1.LabelConfig) // not a valid label value
	}
	return l
}

// inlinePairs reports whether a pairs file is small enough to travel in
// PairsAnnotation instead of a ConfigMap.
func inlinePairs(pairs []byte) bool { return len(pairs) <= InlinePairsLimit }

// pairsConfigMap is the immutable ConfigMap holding the pairs file, owned by
// the FriendDeletion.
func pairsConfigMap(fd *snsv1alpha1.FriendDeletion, pairs []byte, scheme *runtime.Scheme) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pairsConfigMapName(fd.Name),
			Namespace: fd.Namespace,
			Labels:    childLabels(fd, ""),
		},
		Immutable: ptr.To(true),
		Data:      map[string]string{PairsKey: string(pairs)},
	}
	if err := controllerutil.SetControllerReference(fd, cm, scheme); err != nil {
		return nil, err
	}
	return cm, nil
}

// buildJob is the step's Job: the config's template with the Job contract
// added to every container, the operator's labels, and an owner reference
// to the FriendDeletion. pairs is the pairs file: the pod template's
// PairsAnnotation through the downward API when it is small enough to
// inline, else the pairs ConfigMap.
func buildJob(fd *snsv1alpha1.FriendDeletion, step string, tmpl *batchv1.JobTemplateSpec, name string, pairs []byte, scheme *runtime.Scheme) (*batchv1.Job, error) {
	labels := childLabels(fd, step)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   fd.Namespace,
			Labels:      merge(tmpl.Labels, labels),
			Annotations: merge(tmpl.Annotations, nil),
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	pod := &job.Spec.Template
	pod.Labels = merge(pod.Labels, labels)
	if pod.Spec.RestartPolicy == "" {
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	src := corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: pairsConfigMapName(fd.Name)},
	}}
	if inlinePairs(pairs) {
		pod.Annotations = merge(pod.Annotations, map[string]string{PairsAnnotation: string(pairs)})
		src = corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{
			Path:     PairsKey,
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['" + PairsAnnotation + "']"},
		}}}}
	}
	pod.Spec.Volumes = append(withoutVolume(pod.Spec.Volumes, pairsVolume), corev1.Volume{Name: pairsVolume, VolumeSource: src})
	env := contractEnv(fd)
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			c := &cs[i]
			c.Env = append(withoutEnv(c.Env, env), env...)
			c.VolumeMounts = append(withoutMount(c.VolumeMounts, pairsVolume), corev1.VolumeMount{
				Name: pairsVolume, MountPath: PairsMountPath, ReadOnly: true,
			})
		}
	}
	if err := controllerutil.SetControllerReference(fd, job, scheme); err != nil {
		return nil, err
	}
	return job, nil
}

// contractEnv is the environment of the Job contract.
func contractEnv(fd *snsv1alpha1.FriendDeletion) []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: EnvFriendDeletionName, Value: fd.Name},
		{Name: EnvFriendDeletionNamespace, Value: fd.Namespace},
		{Name: EnvSDKAppID, Value: fd.Spec.SDKAppID},
		{Name: EnvPairCount, Value: strconv.Itoa(len(fd.Spec.Pairs))},
	}
	if len(fd.Spec.Pairs) == 1 {
		env = append(env,
			corev1.EnvVar{Name: EnvFromAccount, Value: fd.Spec.Pairs[0].From},
			corev1.EnvVar{Name: EnvToAccount, Value: fd.Spec.Pairs[0].To})
	}
	return append(env, corev1.EnvVar{Name: EnvPairsFile, Value: PairsFile})
}

func merge(a, b map[string]string) map[string]string {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func withoutEnv(env, drop []corev1.EnvVar) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(env)+len(drop))
	for _, e := range env {
		keep := true
		for _, d := range drop {
			keep = keep && e.Name != d.Name
		}
		// FROM_ACCOUNT and TO_ACCOUNT are the contract's even when absent.
		keep = keep && e.Name != EnvFromAccount && e.Name != EnvToAccount
		if keep {
			out = append(out, e)
		}
	}
	return out
}

func withoutVolume(vs []corev1.Volume, name string) []corev1.Volume {
	out := vs[:0:0]
	for _, v := range vs {
		if v.Name != name {
			out = append(out, v)
		}
	}
	return out
}

func withoutMount(ms []corev1.VolumeMount, name string) []corev1.VolumeMount {
	out := ms[:0:0]
	for _, m := range ms {
		if m.Name != name && m.MountPath != PairsMountPath {
			out = append(out, m)
		}
	}
	return out
}
