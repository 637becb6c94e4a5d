package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

func TestJobStepRunsJobWithContractAndSucceeds(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge")), newFriendDeletion(ns, "fd1", "app"))

	job := getJob(t, ns, "fd1-purge")
	fd := waitForJobRecorded(t, ns, "fd1", "purge")

	// The Job: owned by the FriendDeletion, labelled, with the contract.
	g := gt(t)
	g.Expect(metav1.IsControlledBy(job, fd)).To(BeTrue())
	g.Expect(job.Labels).To(HaveKeyWithValue(snsv1alpha1.LabelFriendDeletion, "fd1"))
	g.Expect(job.Labels).To(HaveKeyWithValue(snsv1alpha1.LabelStep, "purge"))
	g.Expect(job.Labels).To(HaveKeyWithValue("team", "im"))
	g.Expect(job.Spec.Template.Spec.RestartPolicy).To(Equal(corev1.RestartPolicyNever))
	c := job.Spec.Template.Spec.Containers[0]
	g.Expect(c.Env).To(ContainElements(
		corev1.EnvVar{Name: "LOG_LEVEL", Value: "debug"},
		corev1.EnvVar{Name: "FRIEND_DELETION_NAME", Value: "fd1"},
		corev1.EnvVar{Name: "FRIEND_DELETION_NAMESPACE", Value: ns},
		corev1.EnvVar{Name: "SDKAPPID", Value: "1400000001"},
		corev1.EnvVar{Name: "PAIR_COUNT", Value: "1"},
		corev1.EnvVar{Name: "FROM_ACCOUNT", Value: "alice"},
		corev1.EnvVar{Name: "TO_ACCOUNT", Value: "bob"},
		corev1.EnvVar{Name: "PAIRS_FILE", Value: "/etc/friend-deletion/pairs.json"},
	))
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: pairsVolume, MountPath: "/etc/friend-deletion", ReadOnly: true}))
	// One pair is small: the pairs file comes from the pod's annotation, and
	// no ConfigMap is made.
	g.Expect(job.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("VolumeSource.DownwardAPI.Items",
		ConsistOf(HaveField("FieldRef.FieldPath", "metadata.annotations['sns.imcallback.io/pairs']")))))
	var pairs []snsv1alpha1.FriendPair
	g.Expect(json.Unmarshal([]byte(job.Spec.Template.Annotations[PairsAnnotation]), &pairs)).To(Succeed())
	g.Expect(pairs).To(Equal([]snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}))
	err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "fd1-pairs"}, &corev1.ConfigMap{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "want no pairs ConfigMap, got %v", err)

	// The status while the Job runs.
	st := stepOf(g, fd, "purge")
	g.Expect(st.Type).To(Equal(snsv1alpha1.StepTypeJob))
	g.Expect(st.JobName).To(Equal("fd1-purge"))
	g.Expect(st.Message).To(Equal("Running Job fd1-purge."))
	g.Expect(st.StartTime).NotTo(BeNil())
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/purge")).To(HaveField("Reason", snsv1alpha1.ReasonRunning))
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(HaveField("Status", metav1.ConditionFalse), HaveField("Reason", snsv1alpha1.ReasonRunning)))

	setJobStatus(t, job, "complete")
	fd = waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseSucceeded)
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(HaveField("Status", metav1.ConditionTrue), HaveField("Reason", snsv1alpha1.ReasonSucceeded)))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/purge")).To(HaveField("Status", metav1.ConditionTrue))
	g.Expect(fd.Status.CompletionTime).NotTo(BeNil())
	g.Expect(stepOf(g, fd, "purge").CompletionTime).NotTo(BeNil())
	g.Expect(stepOf(g, fd, "purge").Attempts).To(Equal(int32(1)), "the Job's outcome records it as seen")
	// It ran without a hitch: no Event, and its finished Job is deleted
	// once the outcome is recorded.
	gt(t).Eventually(func(g Gomega) []batchv1.Job { return jobsOf(g, ns, "fd1") }).Should(BeEmpty())
	gt(t).Consistently(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(BeEmpty())
}

func TestJobStepRetryThenFailure(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge"), jobStep("notify")),
		newFriendDeletion(ns, "fd1", "app", snsv1alpha1.FriendPair{From: "a", To: "b"}, snsv1alpha1.FriendPair{From: "a", To: "c"}))

	job := getJob(t, ns, "fd1-purge")
	g := gt(t)
	// Two pairs: no FROM_ACCOUNT/TO_ACCOUNT, PAIR_COUNT=2.
	vars := job.Spec.Template.Spec.Containers[0].Env
	g.Expect(vars).To(ContainElement(corev1.EnvVar{Name: "PAIR_COUNT", Value: "2"}))
	g.Expect(vars).NotTo(ContainElement(HaveField("Name", "FROM_ACCOUNT")))
	g.Expect(vars).NotTo(ContainElement(HaveField("Name", "TO_ACCOUNT")))

	// A pod failed; the Job retries it (backoffLimit): the step says so.
	setJobStatus(t, job, "podFailed")
	gt(t).Eventually(func(g Gomega) {
		fd := getFD(g, ns, "fd1")
		g.Expect(fd.Status.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(conditionOf(fd, "step.sns.imcallback.io/purge")).To(SatisfyAll(
			HaveField("Reason", snsv1alpha1.ReasonRetrying),
			HaveField("Message", ContainSubstring("1 pod(s) failed"))))
	}).Should(Succeed())

	setJobStatus(t, job, "failed")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g.Expect(stepOf(g, fd, "purge").Phase).To(Equal(snsv1alpha1.PhaseFailed))
	g.Expect(stepOf(g, fd, "purge").Message).To(ContainSubstring("BackoffLimitExceeded"))
	g.Expect(stepOf(g, fd, "notify").Phase).To(Equal(snsv1alpha1.PhasePending))
	g.Expect(conditionOf(fd, "step.sns.imcallback.io/notify").Message).To(ContainSubstring(`step "purge" failed`))
	g.Expect(conditionOf(fd, "Ready")).To(SatisfyAll(HaveField("Reason", snsv1alpha1.ReasonFailed), HaveField("Message", ContainSubstring("purge"))))
	g.Expect(fd.Status.CompletionTime).NotTo(BeNil())

	// The failed step stops the rest: no Job for the second step (and the
	// failed Job goes once its outcome is recorded).
	g.Consistently(func(g Gomega) {
		var jobs batchv1.JobList
		g.Expect(env.Client.List(context.Background(), &jobs, client.InNamespace(ns))).To(Succeed())
		for _, j := range jobs.Items {
			g.Expect(j.Name).NotTo(Equal("fd1-notify"))
		}
	}).Should(Succeed())
	gt(t).Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElements("StepRetrying", "StepFailed", "Failed"))
}

func TestJobStepManyPairsComeFromAConfigMap(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	var many []snsv1alpha1.FriendPair
	for i := range 200 {
		many = append(many, snsv1alpha1.FriendPair{From: "alice", To: fmt.Sprintf("friend-%03d", i)})
	}
	create(t, newConfig(ns, "app", jobStep("purge"), jobStep("notify")), newFriendDeletion(ns, "fd1", "app", many...))

	job := getJob(t, ns, "fd1-purge")
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseRunning)
	g := gt(t)
	g.Expect(job.Spec.Template.Annotations).NotTo(HaveKey(PairsAnnotation))
	g.Expect(job.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("VolumeSource.ConfigMap.Name", "fd1-pairs")))
	g.Expect(job.Spec.Template.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: "PAIR_COUNT", Value: "200"}))

	// The pairs ConfigMap: immutable, owned, holding every pair as JSON.
	cm := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "fd1-pairs"}, cm)).To(Succeed())
	g.Expect(metav1.IsControlledBy(cm, fd)).To(BeTrue())
	g.Expect(cm.Immutable).To(Equal(ptr.To(true)))
	g.Expect(len(cm.Data[PairsKey])).To(BeNumerically(">", InlinePairsLimit))
	var pairs []snsv1alpha1.FriendPair
	g.Expect(json.Unmarshal([]byte(cm.Data[PairsKey]), &pairs)).To(Succeed())
	g.Expect(pairs).To(Equal(many))

	// The second job step shares it.
	setJobStatus(t, job, "complete")
	second := getJob(t, ns, "fd1-notify")
	g.Expect(second.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("VolumeSource.ConfigMap.Name", "fd1-pairs")))
	var cms corev1.ConfigMapList
	g.Expect(env.Client.List(t.Context(), &cms, client.InNamespace(ns), client.HasLabels{snsv1alpha1.LabelFriendDeletion})).To(Succeed())
	g.Expect(cms.Items).To(HaveLen(1))
}

// TestJobRefusedByTheAPIServerFailsTheStep uses a template the CRD takes
// but the Job API refuses (a container name that is not a DNS label): the
// step fails at once with the API server's message instead of retrying.
func TestJobRefusedByTheAPIServerFailsTheStep(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	bad := jobStep("purge")
	bad.Job.Spec.Template.Spec.Containers[0].Name = "Clean_Up"
	create(t, newConfig(ns, "app", bad, jobStep("notify")), newFriendDeletion(ns, "fd1", "app"))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	st := stepOf(g, fd, "purge")
	g.Expect(st.Message).To(SatisfyAll(ContainSubstring("Refused for good"), ContainSubstring("is invalid"), ContainSubstring("Clean_Up")))
	g.Expect(st.Attempts).To(BeZero())
	g.Expect(stepOf(g, fd, "notify").Phase).To(Equal(snsv1alpha1.PhasePending))
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())
	gt(t).Eventually(func(g Gomega) []string { return eventsFor(g, ns, "fd1") }).Should(ContainElements("StepFailed", "Failed"))
}

// TestPairsFileTooLargeForAConfigMapFailsTheStep stores a FriendDeletion
// whose pairs file would be over 1 MiB (1100 pairs of 128 four-byte
// characters each side): the step fails saying so, and nothing is created.
func TestPairsFileTooLargeForAConfigMapFailsTheStep(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	wide := strings.Repeat("\U0001F600", 128)
	pairs := make([]snsv1alpha1.FriendPair, 1100)
	for i := range pairs {
		pairs[i] = snsv1alpha1.FriendPair{From: wide, To: fmt.Sprintf("%s%04d", wide[:len(wide)-16], i)}
	}
	create(t, newConfig(ns, "app", jobStep("purge")), newFriendDeletion(ns, "fd1", "app", pairs...))

	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	g.Expect(stepOf(g, fd, "purge").Message).To(MatchRegexp(`the pairs file is \d+ bytes, more than the 1048566 a ConfigMap can hold`))
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())
	var cms corev1.ConfigMapList
	g.Expect(env.Client.List(t.Context(), &cms, client.InNamespace(ns), client.HasLabels{snsv1alpha1.LabelFriendDeletion})).To(Succeed())
	g.Expect(cms.Items).To(BeEmpty())
}

// TestPairsFileKeepsHTMLCharacters checks the pairs ConfigMap holds <, >
// and & as themselves.
func TestPairsFileKeepsHTMLCharacters(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns, testOptions())
	var many []snsv1alpha1.FriendPair
	for i := range 200 {
		many = append(many, snsv1alpha1.FriendPair{From: "<alice&co>", To: fmt.Sprintf("friend-%03d", i)})
	}
	create(t, newConfig(ns, "app", jobStep("purge")), newFriendDeletion(ns, "fd1", "app", many...))
	getJob(t, ns, "fd1-purge")
	g := gt(t)
	cm := &corev1.ConfigMap{}
	g.Expect(env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "fd1-pairs"}, cm)).To(Succeed())
	g.Expect(cm.Data[PairsKey]).To(HavePrefix(`[{"from":"<alice&co>","to":"friend-000"}`))
	g.Expect(cm.Data[PairsKey]).NotTo(ContainSubstring(`\u003c`))
}

// TestJobDeniedByAdmissionPolicyFailsTheStep refuses every Job of the
// namespace with a ValidatingAdmissionPolicy (403 Forbidden, as an admission
// webhook would): the step fails at once with the policy's message.
func TestJobDeniedByAdmissionPolicyFailsTheStep(t *testing.T) {
	ns := env.Namespace(t)
	denyJobs(t, ns)
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge")), newFriendDeletion(ns, "fd1", "app"))
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	g.Expect(stepOf(g, fd, "purge").Message).To(SatisfyAll(ContainSubstring("Refused for good"),
		ContainSubstring("denied request"), ContainSubstring("Jobs are frozen in this namespace")))
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())
}

// denyJobs refuses every Job created in ns with a ValidatingAdmissionPolicy
// (403 Forbidden, as an admission webhook would), and waits until the API
// server enforces it.
func denyJobs(t *testing.T, ns string) {
	t.Helper()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "freeze-jobs-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"batch"}, APIVersions: []string{"v1"}, Resources: []string{"jobs"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "false", Message: "Jobs are frozen in this namespace", Reason: ptr.To(metav1.StatusReasonForbidden),
			}},
		},
	}
	enforceInNamespace(t, ns, policy)
	// Wait until the API server enforces the policy.
	probe := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "c", Image: "busybox"}},
		}}},
	}
	gt(t).Eventually(func() bool {
		return apierrors.IsForbidden(env.Client.Create(t.Context(), probe.DeepCopy(), client.DryRunAll))
	}).Should(BeTrue())
}

// waitForJobRecorded waits until the step records its Job (Running, with
// the Job's name) and returns the FriendDeletion.
func waitForJobRecorded(t *testing.T, ns, name, step string) *snsv1alpha1.FriendDeletion {
	t.Helper()
	var fd *snsv1alpha1.FriendDeletion
	gt(t).Eventually(func(g Gomega) {
		fd = getFD(g, ns, name)
		st := stepOf(g, fd, step)
		g.Expect(st.Phase).To(Equal(snsv1alpha1.PhaseRunning))
		g.Expect(st.JobName).To(Equal(jobName(name, step)))
	}).Should(Succeed())
	return fd
}

// denyRecordedJobs makes the API server refuse, for good, any status of the
// named FriendDeletions (in ns) that records a Job name, with msg: a
// ValidatingAdmissionPolicy, enforced before it returns.
func denyRecordedJobs(t *testing.T, ns, msg string, names ...string) {
	t.Helper()
	quoted := make([]string, 0, len(names)+1)
	for _, n := range append(names, "probe") {
		quoted = append(quoted, "'"+n+"'")
	}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-job-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{snsv1alpha1.GroupVersion.Group}, APIVersions: []string{snsv1alpha1.GroupVersion.Version},
						Resources: []string{"frienddeletions/status"}},
				},
			}}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "some", Expression: "object.metadata.name in [" + strings.Join(quoted, ", ") + "]"}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "!has(object.status) || !has(object.status.steps) || object.status.steps.all(s, !has(s.jobName))",
				Message:    msg, Reason: ptr.To(metav1.StatusReasonForbidden),
			}},
		},
	}
	enforceInNamespace(t, ns, policy)
	// Wait until the API server enforces the policy.
	probe := newFriendDeletion(ns, "probe", "none")
	create(t, probe)
	gt(t).Eventually(func() bool {
		p := probe.DeepCopy()
		p.Status.Steps = []snsv1alpha1.StepStatus{{Name: "purge", Type: snsv1alpha1.StepTypeJob, Phase: snsv1alpha1.PhaseRunning, JobName: "probe-purge"}}
		return apierrors.IsForbidden(env.Client.Status().Update(t.Context(), p, client.DryRunAll))
	}).Should(BeTrue())
}

// TestJobIntentRefusedForGoodFailsTheStep: a FriendDeletion whose intent
// write (its step Running with the Job's name) the API server refuses for
// good fails the step with the API server's message, and no Job is created.
func TestJobIntentRefusedForGoodFailsTheStep(t *testing.T) {
	ns := env.Namespace(t)
	denyRecordedJobs(t, ns, "no Job for this one", "fd1")
	startManager(t, ns, testOptions())
	create(t, newConfig(ns, "app", jobStep("purge")))
	create(t, newFriendDeletion(ns, "fd1", "app"))
	fd := waitForPhase(t, ns, "fd1", snsv1alpha1.PhaseFailed)
	g := gt(t)
	st := stepOf(g, fd, "purge")
	g.Expect(st.Message).To(SatisfyAll(HavePrefix("Refused for good, not retried: "), ContainSubstring("no Job for this one")))
	g.Expect(st.JobName).To(BeEmpty())
	g.Expect(jobsOf(g, ns, "fd1")).To(BeEmpty())
}

// enforceInNamespace creates policy and a binding that denies what it
// refuses in ns, both deleted when the test ends.
func enforceInNamespace(t *testing.T, ns string, policy *admissionregistrationv1.ValidatingAdmissionPolicy) {
	t.Helper()
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns},
			}},
		},
	}
	create(t, policy, binding)
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), binding)
		_ = env.Client.Delete(context.Background(), policy)
	})
}
