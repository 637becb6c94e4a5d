package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
// Failed.
//
// Intent comes first: the step is recorded Running with its Job's name (and,
// on the first reconcile, with the whole step list) before the Job is
// created, so that a config changed or deleted right after the Job was
// created cannot reorder the steps or fail a deletion whose Job runs.
// Once the create succeeds, the same reconcile's status write records
// attempts 1: the Job was created. (A Job found existing, created by a
// reconcile whose record was lost, is recorded the same way when seen.)
// After that a Job that runs as intended writes nothing more until it has
// news: a pod failed (Retrying), or it finished. A Job found missing once
// it was created (attempts 1, its deletion observed by the Job watch, or,
// for a batch Job, another member's record: jobCreated) fails the step
// instead of being created again, since its cleanup may already have run;
// this holds across restarts and leader changes. A Job missing with only
// the intent recorded was never created, and is created now.
//
// spec is nil for a running step whose definition left the config: its Job
// is followed, or the step fails if the Job was never created.
//
// Sets the step condition: Running, Retrying, Succeeded or Failed (or
// ConfigNotFound / StepRemoved for a Job never created).
func (r *FriendDeletionReconciler) reconcileJobStep(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, spec *snsv1alpha1.CleanupStep, st *snsv1alpha1.StepStatus) (ctrl.Result, error) {
	if st.JobName != "" {
		r.batchState().forget(client.ObjectKeyFromObject(fd))
	}
	if st.Phase == snsv1alpha1.PhasePending && spec != nil && spec.Job != nil && spec.Batch != nil {
		return r.joinBatch(ctx, p, fd, cfg, spec, st)
	}
	name := jobName(fd.Name, st.Name)
	if st.JobName != "" {
		name = st.JobName // a batch Job is named after its first member
	}
	// Once the Job is recorded (intent or seen) a cache miss is confirmed
	// with the API server: the cache often lags behind a Job created a
	// moment ago, and one read is cheaper than a create refused as
	// AlreadyExists followed by that read.
	job, err := r.getJob(ctx, fd.Namespace, name, st.JobName == name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if job == nil {
		created, err := r.jobCreated(ctx, fd, st, name)
		switch {
		case err != nil:
			return ctrl.Result{}, err
		case created:
			r.failJobGone(fd, st, name)
			return ctrl.Result{}, nil
		case spec == nil || spec.Job == nil:
			reason, msg := stepGone(fd, cfg, st)
			stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, reason, msg+" Its Job was never created.", r.now())
			return ctrl.Result{}, nil
		}
		if name != jobName(fd.Name, st.Name) || spec.Batch != nil {
			return r.recreateBatchJob(ctx, fd, st, spec.Job, name)
		}
		if ok, err := r.recordJobIntent(ctx, p, fd, st, name); !ok || err != nil {
			if err == nil && st.Phase == snsv1alpha1.PhaseFailed {
				return ctrl.Result{}, nil // refused for good
			}
			if err == nil {
				// Lost a race with a newer status (perhaps our own last
				// write, whose event wakes nothing): again, from it.
				return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
			}
			return ctrl.Result{}, err
		}
		st = stepstatus.Find(fd, st.Name) // the write replaced fd's status
		created, err = r.createJob(ctx, fd, st.Name, spec.Job, name)
		if err != nil {
			return r.jobCreateFailed(fd, st, err)
		}
		ctrl.LoggerFrom(ctx).V(1).Info("created Job", "job", name, "created", created)
		if created {
			// The Job exists: record it (attempts 1) in this reconcile's
			// status write, so that a Job found missing from now on, by
			// any manager, is known to have been created and is not
			// created again.
			st.Attempts = 1
			stepstatus.Mark(fd, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(name), r.now())
			return ctrl.Result{}, nil
		}
		if job, err = r.getJob(ctx, fd.Namespace, name, true); err != nil || job == nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("job %s already exists but cannot be read", name))
		}
	}
	if !servesJob(job, fd) && (isBatchJob(job) || name != jobName(fd.Name, st.Name)) {
		// Its membership of a batch was written, but the Job was created
		// without it (or, the step's batch since removed, for its first
		// member alone): nothing ran for it. It starts the step again.
		st.JobName, st.StartTime = "", nil
		stepstatus.Mark(fd, st, snsv1alpha1.PhasePending, snsv1alpha1.ReasonPending,
			fmt.Sprintf("Job %s was created without this FriendDeletion; the step starts again.", name), r.now())
		return ctrl.Result{RequeueAfter: r.conflictDelay()}, nil
	}
	if !servesJob(job, fd) {
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed,
			fmt.Sprintf("Job %s exists and does not belong to this FriendDeletion.", name), r.now())
		return ctrl.Result{}, nil
	}
	phase, reason, msg := jobStepStatus(job)
	if st.JobName == name && st.Attempts == 0 && name != jobName(fd.Name, st.Name) &&
		st.Phase == phase && st.Message == msg && conditionReason(fd, st.Name) == reason {
		// A batch member other than the first, whose Job runs as its
		// membership said: nothing a user needs is new. The first
		// member's record says the Job was created (jobCreated).
		return ctrl.Result{}, nil
	}
	st.JobName = name
	st.Attempts = 1 + job.Status.Failed
	stepstatus.Mark(fd, st, phase, reason, msg, r.now())
	return ctrl.Result{}, nil
}

// jobCreated reports whether the Job a job step records, found missing,
// was created (and so may have run): the step records it created or seen
// (attempts), the Job watch saw it deleted since the manager started, or
// another FriendDeletion records that Job created or seen (a batch Job:
// its first member's record, written once the Job was created, or another
// member's outcome), as the indexCreatedJob index finds. A step that
// records the Job's name without any of these recorded only the intent:
// the create never happened, or its record was lost with the manager in
// the moment after it.
func (r *FriendDeletionReconciler) jobCreated(ctx context.Context, fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, name string) (bool, error) {
	switch {
	case st.Attempts > 0:
		return true, nil
	case st.JobName != name:
		return false, nil
	case r.jobDeletions().deleted(client.ObjectKeyFromObject(fd), name):
		return true, nil
	}
	var list snsv1alpha1.FriendDeletionList
	if err := r.List(ctx, &list, client.InNamespace(fd.Namespace), client.MatchingFields{indexCreatedJob: name}, client.UnsafeDisableDeepCopy); err != nil {
		return false, fmt.Errorf("listing the records of Job %s: %w", name, err)
	}
	for i := range list.Items {
		m := &list.Items[i]
		if m.UID == fd.UID {
			continue // the cache's copy of fd: st is newer
		}
		if mst := stepstatus.Find(m, st.Name); mst != nil && mst.JobName == name && mst.Attempts > 0 {
			return true, nil
		}
	}
	return false, nil
}

// failJobGone fails a job step whose Job was created and is gone before its
// outcome was recorded: it is not created again, since its cleanup may have
// run, in part or whole.
func (r *FriendDeletionReconciler) failJobGone(fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, name string) {
	stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed, fmt.Sprintf(
		"Job %s was deleted before its outcome was recorded; it is not created again, as its cleanup may have run.", name), r.now())
}

// conditionReason is the reason of the named step's condition, or "".
func conditionReason(fd *snsv1alpha1.FriendDeletion, step string) string {
	if c := meta.FindStatusCondition(fd.Status.Conditions, snsv1alpha1.StepConditionType(step)); c != nil {
		return c.Reason
	}
	return ""
}

// jobCreateFailed ends the step when the Job (or its pairs ConfigMap) was
// refused for good, with the API server's message, and otherwise says in
// the step's message what is being retried and returns the error for a
// retry with backoff.
func (r *FriendDeletionReconciler) jobCreateFailed(fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, err error) (ctrl.Result, error) {
	if isPermanent(err) {
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed,
			fmt.Sprintf("Refused for good, not retried: %v", err), r.now())
		return ctrl.Result{}, nil
	}
	stepstatus.Set(st, snsv1alpha1.PhaseRunning, fmt.Sprintf("Retrying: %v", err), r.now())
	return ctrl.Result{}, err
}

// getJob returns the named Job, or nil when it does not exist. The cache
// may lag behind a Job created a moment ago, so with confirm a miss is
// checked with the API server. The Job is only read, and is not copied
// from the cache: a batch Job carries a label and an owner reference per
// member, and every member reads it.
func (r *FriendDeletionReconciler) getJob(ctx context.Context, ns, name string, confirm bool) (*batchv1.Job, error) {
	key := types.NamespacedName{Namespace: ns, Name: name}
	job := &batchv1.Job{}
	err := r.Get(ctx, key, job, client.UnsafeDisableDeepCopy)
	if apierrors.IsNotFound(err) && confirm {
		err = r.APIReader.Get(ctx, key, job)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting Job %s: %w", name, err)
	}
	return job, nil
}

// recordJobIntent writes the step Running with its Job's name before the Job
// is created (with whatever else changed: on the first reconcile, the step
// list). It reports false when the write lost a race with a newer status;
// nothing is created then, and the caller reconciles again.
func (r *FriendDeletionReconciler) recordJobIntent(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, st *snsv1alpha1.StepStatus, name string) (bool, error) {
	now := r.now()
	if st.Phase != snsv1alpha1.PhaseRunning || st.JobName != name {
		st.JobName = name
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(name), now)
	}
	summarize(fd, now)
	switch err := p.Patch(ctx, fd); {
	case apierrors.IsConflict(err):
		ctrl.LoggerFrom(ctx).V(1).Info("status changed before the Job was created; will reconcile again", "job", name)
		deferStatus(ctx)
		return false, nil
	case isPermanent(err):
		// The API server will refuse the same write every time (an
		// admission policy, say): no Job is created, and the step fails
		// with its message, which the reconcile's last write records.
		st.JobName = ""
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, snsv1alpha1.ReasonFailed,
			fmt.Sprintf("Refused for good, not retried: recording Job %s in status: %v", name, err), now)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("recording Job %s in status: %w", name, err)
	}
	return true, nil
}

// createJob creates the Job, after the pairs ConfigMap when the pairs are
// too many to inline, and reports whether it created the Job. Both have
// deterministic names, so AlreadyExists means an earlier reconcile (perhaps
// of a manager since restarted) created them.
func (r *FriendDeletionReconciler) createJob(ctx context.Context, fd *snsv1alpha1.FriendDeletion, step string, tmpl *batchv1.JobTemplateSpec, name string) (bool, error) {
	pairs, err := pairsFile(stepPairs(fd))
	if err != nil {
		return false, err
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
	return snsv1alpha1.PhaseRunning, snsv1alpha1.ReasonRunning, jobRunningMessage(job.Name)
}

// jobRunningMessage is a running job step's message, the same in its intent
// (written just before the Job is created) and once the Job is seen, so
// that seeing the Job writes nothing.
func jobRunningMessage(job string) string { return fmt.Sprintf("Running Job %s.", job) }

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

// MaxPairsFile is the largest pairs file: a ConfigMap holds at most 1 MiB
// of keys and values together, and the pairs file is its only value.
const MaxPairsFile = 1<<20 - len(PairsKey)

// pairsFile is the pairs file: the pairs as a JSON array, with <, > and &
// written as themselves (JSON's HTML escaping would make each six bytes).
// A file larger than a ConfigMap can hold is a permanent error.
func pairsFile(pairs []snsv1alpha1.FriendPair) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(pairs); err != nil {
		return nil, fmt.Errorf("encoding pairs: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxPairsFile {
		return nil, permanent(fmt.Errorf("the pairs file is %d bytes, more than the %d a ConfigMap can hold", len(b), MaxPairsFile))
	}
	return b, nil
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
	job := buildJobFrom(tmpl, jobInput{
		namespace: fd.Namespace, name: name,
		labels: labels, podLabels: labels,
		env: contractEnv(fd), pairs: pairs, configMap: pairsConfigMapName(fd.Name),
	})
	if err := controllerutil.SetControllerReference(fd, job, scheme); err != nil {
		return nil, err
	}
	return job, nil
}

// jobInput is what buildJobFrom adds to a step's template.
type jobInput struct {
	namespace, name string
	labels          map[string]string // the operator's labels on the Job
	podLabels       map[string]string // and on its pod template
	env             []corev1.EnvVar   // the contract's environment
	pairs           []byte            // the pairs file
	configMap       string            // the pairs ConfigMap, when pairs are not inlined
	owners          []metav1.OwnerReference
}

// buildJobFrom is the template with the Job contract added to every
// container: labels, environment, and the pairs volume, from the pod
// template's PairsAnnotation through the downward API when the pairs file
// is small enough to inline, else from the pairs ConfigMap.
func buildJobFrom(tmpl *batchv1.JobTemplateSpec, in jobInput) *batchv1.Job {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:            in.name,
			Namespace:       in.namespace,
			Labels:          merge(tmpl.Labels, in.labels),
			Annotations:     merge(tmpl.Annotations, nil),
			OwnerReferences: in.owners,
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	pod := &job.Spec.Template
	pod.Labels = merge(pod.Labels, in.podLabels)
	// A Job that deletes itself after it finished would take its outcome with
	// it; the API refuses the field, and configs stored before that rule are
	// handled here. The operator deletes a finished Job once its outcome is
	// recorded (deleteFinishedJobs).
	job.Spec.TTLSecondsAfterFinished = nil
	if pod.Spec.RestartPolicy == "" {
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	src := corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: in.configMap},
	}}
	if inlinePairs(in.pairs) {
		pod.Annotations = merge(pod.Annotations, map[string]string{PairsAnnotation: string(in.pairs)})
		src = corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{
			Path:     PairsKey,
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['" + PairsAnnotation + "']"},
		}}}}
	}
	pod.Spec.Volumes = append(withoutVolume(pod.Spec.Volumes, pairsVolume), corev1.Volume{Name: pairsVolume, VolumeSource: src})
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			c := &cs[i]
			c.Env = append(withoutEnv(c.Env, in.env), in.env...)
			c.VolumeMounts = append(withoutMount(c.VolumeMounts, pairsVolume), corev1.VolumeMount{
				Name: pairsVolume, MountPath: PairsMountPath, ReadOnly: true,
			})
		}
	}
	return job
}

// contractEnv is the environment of the Job contract.
func contractEnv(fd *snsv1alpha1.FriendDeletion) []corev1.EnvVar {
	pairs := stepPairs(fd)
	env := []corev1.EnvVar{
		{Name: EnvFriendDeletionName, Value: fd.Name},
		{Name: EnvFriendDeletionNamespace, Value: fd.Namespace},
		{Name: EnvSDKAppID, Value: fd.Spec.SDKAppID},
		{Name: EnvPairCount, Value: strconv.Itoa(len(pairs))},
	}
	if len(pairs) == 1 {
		env = append(env,
			corev1.EnvVar{Name: EnvFromAccount, Value: pairs[0].From},
			corev1.EnvVar{Name: EnvToAccount, Value: pairs[0].To})
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

// deleteFinishedJobs deletes, with their pods (background propagation),
// the Jobs of job steps whose outcome fd's stored status records, unless
// the config's retention.keepFinishedJobs keeps them: the recorded outcome
// is what counts, and a finished Job and its pod are most of what a
// retained deletion would store. A batch Job is deleted (with its pairs
// ConfigMap) once every member has recorded its outcome or is gone; until
// then the result asks to look again soon. cfg is the config when known;
// otherwise it is looked up in the cache, and a config that is gone keeps
// nothing. A delete that fails is retried with the reconcile; a manager
// stopped in between leaves the Job to go with its FriendDeletion (the
// last of its members, for a batch Job).
func (r *FriendDeletionReconciler) deleteFinishedJobs(ctx context.Context, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, cfgKnown bool) (ctrl.Result, error) {
	var result ctrl.Result
	for _, st := range fd.Status.Steps {
		if st.Type != snsv1alpha1.StepTypeJob || !st.Phase.Finished() || st.JobName == "" {
			continue
		}
		// Read only, not copied: a batch Job carries a label and an owner
		// reference per member, and every member looks.
		job := &batchv1.Job{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: fd.Namespace, Name: st.JobName}, job, client.UnsafeDisableDeepCopy); err != nil {
			continue // gone, or the cache cannot tell: nothing to do now
		}
		if !job.DeletionTimestamp.IsZero() || !servesJob(job, fd) {
			continue
		}
		if _, ours := r.ourDeletions.Load(job.UID); ours {
			continue // being deleted; its delete event is on its way
		}
		if !cfgKnown {
			c := &snsv1alpha1.CallbackConfig{}
			if err := r.Get(ctx, types.NamespacedName{Namespace: fd.Namespace, Name: fd.Spec.ConfigName}, c); err == nil {
				cfg = c
			}
			cfgKnown = true
		}
		if cfg != nil && cfg.Spec.Retention.KeepFinishedJobs {
			return result, nil
		}
		batch := isBatchJob(job)
		if batch && !r.batchJobDone(ctx, fd, job) {
			result = minResult(result, ctrl.Result{RequeueAfter: batchRecheckDelay})
			continue
		}
		uid := job.UID
		r.ourDeletions.Store(uid, struct{}{})
		del := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: job.Name}}
		err := r.Delete(ctx, del, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &uid})
		if err != nil {
			r.ourDeletions.Delete(uid) // no delete event will come
			if !apierrors.IsNotFound(err) {
				return result, fmt.Errorf("deleting finished Job %s: %w", job.Name, err)
			}
		}
		if batch {
			if err := r.deleteBatchConfigMap(ctx, job); err != nil {
				return result, err
			}
		}
		ctrl.LoggerFrom(ctx).V(1).Info("deleted finished Job; its outcome is recorded", "job", job.Name, "phase", st.Phase)
	}
	return result, nil
}

// deleteBatchConfigMap deletes a batch Job's pairs ConfigMap, if it has one.
func (r *FriendDeletionReconciler) deleteBatchConfigMap(ctx context.Context, job *batchv1.Job) error {
	cm := &corev1.ConfigMap{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: job.Namespace, Name: batchConfigMapName(job.Name)}, cm); err != nil {
		return nil // none (the pairs were inlined), or the cache cannot tell
	}
	err := r.Delete(ctx, cm, client.Preconditions{UID: &cm.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ConfigMap %s of finished Job %s: %w", cm.Name, job.Name, err)
	}
	return nil
}
