package controllers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

const (
	pending   = snsv1alpha1.PhasePending
	running   = snsv1alpha1.PhaseRunning
	succeeded = snsv1alpha1.PhaseSucceeded
	failed    = snsv1alpha1.PhaseFailed
)

func steps(phases ...snsv1alpha1.Phase) []snsv1alpha1.StepStatus {
	out := make([]snsv1alpha1.StepStatus, len(phases))
	for i, p := range phases {
		out[i] = snsv1alpha1.StepStatus{Name: string(rune('a' + i)), Type: snsv1alpha1.StepTypeJob, Phase: p, Message: "msg " + string(rune('a'+i))}
	}
	return out
}

func TestSummarizePhase(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []snsv1alpha1.StepStatus
		want  snsv1alpha1.Phase
	}{
		{"no steps yet", nil, pending},
		{"nothing started", steps(pending, pending), pending},
		{"first running", steps(running, pending), running},
		{"first done, second not started", steps(succeeded, pending), running},
		{"all succeeded", steps(succeeded, succeeded, succeeded), succeeded},
		{"one failed", steps(succeeded, failed, pending), failed},
		{"failed wins over running", steps(running, failed), failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(summarizePhase(tc.steps)).To(Equal(tc.want))
		})
	}
}

func TestReadyCondition(t *testing.T) {
	now := metav1.Now()
	cond := func(step, reason string) metav1.Condition {
		return metav1.Condition{Type: snsv1alpha1.StepConditionType(step), Reason: reason}
	}
	for _, tc := range []struct {
		name        string
		steps       []snsv1alpha1.StepStatus
		conds       []metav1.Condition
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
	}{
		{"no steps", nil, nil, metav1.ConditionFalse, snsv1alpha1.ReasonPending, "Waiting for the cleanup steps"},
		{"config gone before steps were fixed", nil,
			[]metav1.Condition{{Type: snsv1alpha1.ConditionReady, Reason: snsv1alpha1.ReasonConfigNotFound, Message: "gone"}},
			metav1.ConditionFalse, snsv1alpha1.ReasonConfigNotFound, "gone"},
		{"pending", steps(pending, pending), nil, metav1.ConditionFalse, snsv1alpha1.ReasonPending, "Step 1 of 2 (a): msg a"},
		{"second running", steps(succeeded, running), nil, metav1.ConditionFalse, snsv1alpha1.ReasonRunning, "Step 2 of 2 (b): msg b"},
		{"retrying keeps its reason", steps(running), []metav1.Condition{cond("a", snsv1alpha1.ReasonRetrying)},
			metav1.ConditionFalse, snsv1alpha1.ReasonRetrying, "Step 1 of 1 (a)"},
		{"stale reason that does not fit is ignored", steps(failed), []metav1.Condition{cond("a", snsv1alpha1.ReasonRunning)},
			metav1.ConditionFalse, snsv1alpha1.ReasonFailed, "Step 1 of 1 (a): msg a"},
		{"deadline", steps(succeeded, failed, pending), []metav1.Condition{cond("b", snsv1alpha1.ReasonDeadlineExceeded)},
			metav1.ConditionFalse, snsv1alpha1.ReasonDeadlineExceeded, "Step 2 of 3 (b)"},
		{"all succeeded", steps(succeeded, succeeded), nil, metav1.ConditionTrue, snsv1alpha1.ReasonSucceeded, "All 2 cleanup steps succeeded."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := readyCondition(tc.steps, tc.conds, 3, now)
			g.Expect(c.Type).To(Equal(snsv1alpha1.ConditionReady))
			g.Expect(c.Status).To(Equal(tc.wantStatus))
			g.Expect(c.Reason).To(Equal(tc.wantReason))
			g.Expect(c.Message).To(HavePrefix(tc.wantMessage))
			g.Expect(c.ObservedGeneration).To(Equal(int64(3)))
		})
	}
}

func TestSyncStepConditions(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		name       string
		steps      []snsv1alpha1.StepStatus
		conds      []metav1.Condition
		wantReason []string
	}{
		{"new steps get Pending", steps(pending, pending), nil, []string{"Pending", "Pending"}},
		{"externally reported success", steps(succeeded), []metav1.Condition{{Type: "step.sns.imcallback.io/a", Status: "False", Reason: "Running"}}, []string{"Succeeded"}},
		{"specific reasons stay", steps(failed, pending), []metav1.Condition{{Type: "step.sns.imcallback.io/a", Status: "False", Reason: "DeadlineExceeded"}}, []string{"DeadlineExceeded", "Pending"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			fd := &snsv1alpha1.FriendDeletion{Status: snsv1alpha1.FriendDeletionStatus{Steps: tc.steps, Conditions: tc.conds}}
			syncStepConditions(fd, now)
			for i, st := range fd.Status.Steps {
				g.Expect(conditionOf(fd, snsv1alpha1.StepConditionType(st.Name)).Reason).To(Equal(tc.wantReason[i]), st.Name)
			}
		})
	}
	t.Run("steps after a failure say why they did not run", func(t *testing.T) {
		g := NewWithT(t)
		fd := &snsv1alpha1.FriendDeletion{Status: snsv1alpha1.FriendDeletionStatus{Steps: steps(failed, pending)}}
		syncStepConditions(fd, now)
		g.Expect(conditionOf(fd, "step.sns.imcallback.io/b").Message).To(Equal(`Not run: step "a" failed.`))
	})
}

func TestTransitionEvents(t *testing.T) {
	c := func(tp, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: tp, Reason: reason, Message: msg}
	}
	st := func(attempts int32) []snsv1alpha1.StepStatus {
		return []snsv1alpha1.StepStatus{{Name: "purge", Attempts: attempts}}
	}
	step := "step.sns.imcallback.io/purge"
	for _, tc := range []struct {
		name          string
		before, after []metav1.Condition
		steps         []snsv1alpha1.StepStatus
		want          []event
	}{
		{"nothing changed", []metav1.Condition{c(step, "Running", "x")}, []metav1.Condition{c(step, "Running", "y")}, st(1), nil},
		{"a new pending step is no news", nil, []metav1.Condition{c(step, "Pending", "")}, st(0), nil},
		{"a step starting is no news", []metav1.Condition{c(step, "Pending", "")}, []metav1.Condition{c(step, "Running", "Running Job j.")}, st(0), nil},
		{"a step succeeding at once is no news", []metav1.Condition{c(step, "Running", "")}, []metav1.Condition{c(step, "Succeeded", "Job j completed.")}, st(1), nil},
		{"each retry is news", []metav1.Condition{c(step, "Retrying", "attempt 1 failed")}, []metav1.Condition{c(step, "Retrying", "attempt 2 failed")}, st(2),
			[]event{{"Warning", "StepRetrying", "Step purge: attempt 2 failed"}}},
		{"a step that recovers is news", []metav1.Condition{c(step, "Retrying", "attempt 1 failed")}, []metav1.Condition{c(step, "Succeeded", "Attempt 2 of 5 succeeded.")}, st(2),
			[]event{{"Normal", "StepSucceeded", "Step purge: Attempt 2 of 5 succeeded."}}},
		{"step failed", []metav1.Condition{c(step, "Running", "")}, []metav1.Condition{c(step, "Failed", "boom")}, st(1),
			[]event{{"Warning", "StepFailed", "Step purge: boom"}}},
		{"step removed", nil, []metav1.Condition{c(step, "StepRemoved", "gone")}, st(0), []event{{"Warning", "StepRemoved", "Step purge: gone"}}},
		{"ready running is not repeated", nil, []metav1.Condition{c("Ready", "Running", "Step 1")}, st(0), nil},
		{"ready retrying: the step's Event tells it", nil, []metav1.Condition{c("Ready", "Retrying", "Step 1")}, st(2), nil},
		{"succeeded without a hitch is no news", []metav1.Condition{c("Ready", "Running", "")}, []metav1.Condition{c("Ready", "Succeeded", "All 1 cleanup steps succeeded.")}, st(1), nil},
		{"succeeded after a retry", []metav1.Condition{c("Ready", "Running", "")}, []metav1.Condition{c("Ready", "Succeeded", "All 1 cleanup steps succeeded.")}, st(3),
			[]event{{"Normal", "Succeeded", "All 1 cleanup steps succeeded. After a retry."}}},
		{"failed", nil, []metav1.Condition{c("Ready", "Failed", "Step 1 of 1 (purge): boom")}, st(1), []event{{"Warning", "Failed", "Step 1 of 1 (purge): boom"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := &snsv1alpha1.FriendDeletionStatus{Conditions: tc.before, Steps: tc.steps}
			after := &snsv1alpha1.FriendDeletionStatus{Conditions: tc.after, Steps: tc.steps}
			NewWithT(t).Expect(transitionEvents(before, after)).To(Equal(tc.want))
		})
	}
}

func TestJobStepStatus(t *testing.T) {
	cond := func(tp batchv1.JobConditionType, status corev1.ConditionStatus) batchv1.JobCondition {
		return batchv1.JobCondition{Type: tp, Status: status, Reason: "R", Message: "m"}
	}
	for _, tc := range []struct {
		name       string
		status     batchv1.JobStatus
		wantPhase  snsv1alpha1.Phase
		wantReason string
		wantMsg    string
	}{
		{"just created", batchv1.JobStatus{}, running, "Running", "Running Job j."},
		{"active", batchv1.JobStatus{Active: 1}, running, "Running", "Running Job j."},
		{"pod failed, retrying", batchv1.JobStatus{Active: 1, Failed: 2}, running, "Retrying", "Job j is running; 2 pod(s) failed so far (backoffLimit 4)."},
		{"complete", batchv1.JobStatus{Conditions: []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet, "True"), cond(batchv1.JobComplete, "True")}}, succeeded, "Succeeded", "Job j completed."},
		{"failed", batchv1.JobStatus{Conditions: []batchv1.JobCondition{cond(batchv1.JobFailureTarget, "True"), cond(batchv1.JobFailed, "True")}}, failed, "Failed", "Job j failed: R: m."},
		{"failure target only is still running", batchv1.JobStatus{Failed: 1, Conditions: []batchv1.JobCondition{cond(batchv1.JobFailureTarget, "True")}}, running, "Retrying", "Job j is running; 1 pod(s) failed"},
		{"false conditions are ignored", batchv1.JobStatus{Conditions: []batchv1.JobCondition{cond(batchv1.JobComplete, "False")}}, running, "Running", "Running Job j."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			job := &batchv1.Job{Spec: batchv1.JobSpec{BackoffLimit: ptr.To[int32](4)}, Status: tc.status}
			job.Name = "j"
			phase, reason, msg := jobStepStatus(job)
			g.Expect(phase).To(Equal(tc.wantPhase))
			g.Expect(reason).To(Equal(tc.wantReason))
			g.Expect(msg).To(HavePrefix(tc.wantMsg))
		})
	}
}

func TestHTTPBackoff(t *testing.T) {
	o := Options{HTTPBackoffBase: time.Second, HTTPBackoffMax: 10 * time.Second, HTTPBackoffJitter: 0.5}
	for _, tc := range []struct {
		attempt int32
		rnd     float64
		want    time.Duration
	}{
		{1, 0, time.Second},
		{2, 0, 2 * time.Second},
		{3, 0, 4 * time.Second},
		{4, 0, 8 * time.Second},
		{5, 0, 10 * time.Second},
		{20, 0, 10 * time.Second},
		{1, 1, 1500 * time.Millisecond},
		{5, 0.5, 12500 * time.Millisecond},
	} {
		NewWithT(t).Expect(httpBackoff(tc.attempt, o, tc.rnd)).To(Equal(tc.want), "attempt %d rnd %v", tc.attempt, tc.rnd)
	}
}

func TestChildName(t *testing.T) {
	long := strings.Repeat("x", 60)
	for _, tc := range []struct {
		parent, suffix string
		want           string
	}{
		{"fd-1", "purge", "fd-1-purge"},
		{"fd.with.dots", "purge", "fd-with-dots-purge-"},
		{long, "purge", strings.Repeat("x", 48) + "-purge-"},
	} {
		g := NewWithT(t)
		got := childName(tc.parent, tc.suffix)
		g.Expect(got).To(HavePrefix(tc.want))
		g.Expect(len(got)).To(BeNumerically("<=", 63))
		g.Expect(childName(tc.parent, tc.suffix)).To(Equal(got), "deterministic")
	}
	NewWithT(t).Expect(childName(long+"a", "purge")).NotTo(Equal(childName(long+"b", "purge")))
}

func TestRetentionFor(t *testing.T) {
	cfg := &snsv1alpha1.CallbackConfig{Spec: snsv1alpha1.CallbackConfigSpec{Retention: snsv1alpha1.Retention{
		Succeeded: &metav1.Duration{Duration: time.Minute}, Failed: &metav1.Duration{Duration: time.Hour},
	}}}
	g := NewWithT(t)
	g.Expect(retentionFor(succeeded, cfg)).To(Equal(time.Minute))
	g.Expect(retentionFor(failed, cfg)).To(Equal(time.Hour))
	g.Expect(retentionFor(succeeded, nil)).To(Equal(24 * time.Hour))
	g.Expect(retentionFor(failed, nil)).To(Equal(168 * time.Hour))
	g.Expect(retentionFor(failed, &snsv1alpha1.CallbackConfig{})).To(Equal(168 * time.Hour))
}

func TestConfigReadyCondition(t *testing.T) {
	withAuth := func(suspend bool) *snsv1alpha1.CallbackConfig {
		return &snsv1alpha1.CallbackConfig{Spec: snsv1alpha1.CallbackConfigSpec{SDKAppID: "1", Suspend: suspend,
			Auth: &snsv1alpha1.CallbackAuth{TokenSecretRef: snsv1alpha1.SecretKeyRef{Name: "s", Key: "token"}}}}
	}
	secret := func(data map[string]string) *corev1.Secret {
		s := &corev1.Secret{Data: map[string][]byte{}}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		cfg    *snsv1alpha1.CallbackConfig
		secret *corev1.Secret
		status metav1.ConditionStatus
		reason string
	}{
		{"no auth", &snsv1alpha1.CallbackConfig{}, nil, metav1.ConditionTrue, snsv1alpha1.ReasonConfigured},
		{"secret missing", withAuth(false), nil, metav1.ConditionFalse, snsv1alpha1.ReasonSecretNotFound},
		{"key missing", withAuth(false), secret(map[string]string{"x": "y"}), metav1.ConditionFalse, snsv1alpha1.ReasonSecretKeyMissing},
		{"empty token", withAuth(false), secret(map[string]string{"token": " \n"}), metav1.ConditionFalse, snsv1alpha1.ReasonInvalidToken},
		{"token too long", withAuth(false), secret(map[string]string{"token": strings.Repeat("t", 129)}), metav1.ConditionFalse, snsv1alpha1.ReasonInvalidToken},
		{"good token", withAuth(false), secret(map[string]string{"token": "t0ken\n"}), metav1.ConditionTrue, snsv1alpha1.ReasonConfigured},
		{"suspended", withAuth(true), secret(map[string]string{"token": "t0ken"}), metav1.ConditionFalse, snsv1alpha1.ReasonSuspended},
		{"secret problem shown before suspend", withAuth(true), nil, metav1.ConditionFalse, snsv1alpha1.ReasonSecretNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := configReadyCondition(tc.cfg, tc.secret, metav1.Now())
			g := NewWithT(t)
			g.Expect(c.Status).To(Equal(tc.status))
			g.Expect(c.Reason).To(Equal(tc.reason))
			g.Expect(c.Message).NotTo(BeEmpty())
		})
	}
}

func TestBuildJobKeepsTemplateAndAddsContract(t *testing.T) {
	g := NewWithT(t)
	fd := newFriendDeletion("ns", "fd", "app")
	fd.UID = "uid-1"
	tmpl := jobStep("purge").Job
	tmpl.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox",
		Env: []corev1.EnvVar{{Name: "FROM_ACCOUNT", Value: "spoofed"}}}}
	tmpl.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "scratch"}}
	job, err := buildJob(fd, "purge", tmpl, "fd-purge", []byte(`[{"from":"alice","to":"bob"}]`), testenv.Scheme())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(job.OwnerReferences).To(HaveLen(1))
	g.Expect(*job.OwnerReferences[0].Controller).To(BeTrue())
	g.Expect(job.Spec.BackoffLimit).To(Equal(ptr.To[int32](2)))
	g.Expect(job.Spec.Template.Labels).To(HaveKeyWithValue(snsv1alpha1.LabelStep, "purge"))
	g.Expect(job.Spec.Template.Spec.Volumes).To(HaveLen(2))
	init := job.Spec.Template.Spec.InitContainers[0]
	g.Expect(init.Env).To(ContainElement(corev1.EnvVar{Name: "FROM_ACCOUNT", Value: "alice"}))
	g.Expect(init.Env).NotTo(ContainElement(corev1.EnvVar{Name: "FROM_ACCOUNT", Value: "spoofed"}))
	g.Expect(init.VolumeMounts).To(HaveLen(1))
	// The config's template is not changed.
	g.Expect(tmpl.Spec.Template.Spec.Containers[0].Env).To(HaveLen(1))
	g.Expect(tmpl.Spec.Template.Spec.RestartPolicy).To(BeEmpty())
	g.Expect(tmpl.Spec.Template.Annotations).To(BeEmpty())
}

func TestBuildJobPairsFileSource(t *testing.T) {
	fd := newFriendDeletion("ns", "fd", "app")
	small := []byte(`[{"from":"alice","to":"bob"}]`)
	large := []byte(`[{"from":"alice","to":"` + strings.Repeat("b", InlinePairsLimit) + `"}]`)
	for _, tc := range []struct {
		name       string
		pairs      []byte
		annotation bool
		source     types.GomegaMatcher
	}{
		{"inline, from the downward API", small, true, HaveField("DownwardAPI.Items", ConsistOf(corev1.DownwardAPIVolumeFile{
			Path: "pairs.json", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['sns.imcallback.io/pairs']"},
		}))},
		{"too large, from the ConfigMap", large, false, HaveField("ConfigMap.Name", "fd-pairs")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			tmpl := jobStep("purge").Job
			// A template's own volume of the contract's name is replaced.
			tmpl.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: pairsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			job, err := buildJob(fd, "purge", tmpl, "fd-purge", tc.pairs, testenv.Scheme())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(job.Spec.Template.Spec.Volumes).To(ConsistOf(HaveField("VolumeSource", tc.source)))
			if tc.annotation {
				g.Expect(job.Spec.Template.Annotations).To(HaveKeyWithValue(PairsAnnotation, string(tc.pairs)))
			} else {
				g.Expect(job.Spec.Template.Annotations).NotTo(HaveKey(PairsAnnotation))
			}
		})
	}
}

func TestBuildJobClearsTTL(t *testing.T) {
	g := NewWithT(t)
	tmpl := jobStep("purge").Job
	tmpl.Spec.TTLSecondsAfterFinished = ptr.To[int32](60) // stored before the API refused it
	job, err := buildJob(newFriendDeletion("ns", "fd", "app"), "purge", tmpl, "fd-purge", []byte(`[]`), testenv.Scheme())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(job.Spec.TTLSecondsAfterFinished).To(BeNil())
}

func TestPairsFile(t *testing.T) {
	// An account of 128 four-byte runes: 512 bytes as JSON.
	wide := strings.Repeat("\U0001F600", 128)
	// A control character is six bytes as JSON, even unescaped for HTML.
	ctl := strings.Repeat("\x01", 128)
	pairsOf := func(n int, from, to string) []snsv1alpha1.FriendPair {
		ps := make([]snsv1alpha1.FriendPair, n)
		for i := range ps {
			ps[i] = snsv1alpha1.FriendPair{From: from, To: to}
		}
		return ps
	}
	for _, tc := range []struct {
		name    string
		pairs   []snsv1alpha1.FriendPair
		want    string // exact file, when short
		size    int    // else its size
		tooLong bool
	}{
		{"plain", []snsv1alpha1.FriendPair{{From: "alice", To: "bob"}}, `[{"from":"alice","to":"bob"}]`, 0, false},
		{"HTML characters as themselves", []snsv1alpha1.FriendPair{{From: "<a&b>", To: "c<>d"}}, `[{"from":"<a&b>","to":"c<>d"}]`, 0, false},
		{"quotes and backslashes escaped", []snsv1alpha1.FriendPair{{From: `a"b`, To: `c\d`}}, `[{"from":"a\"b","to":"c\\d"}]`, 0, false},
		{"2000 pairs of 4-byte runes fit nowhere", pairsOf(2000, wide, wide), "", 0, true},
		{"1000 pairs of 4-byte runes fit", pairsOf(1000, wide, wide), "", 1000*(len(`{"from":"","to":""}`)+1024) + 1000 + 1, false},
		{"2000 pairs of control characters are too large", pairsOf(2000, ctl, ctl), "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			b, err := pairsFile(tc.pairs)
			if tc.tooLong {
				g.Expect(err).To(MatchError(ContainSubstring("more than the 1048566 a ConfigMap can hold")))
				g.Expect(isPermanent(err)).To(BeTrue())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			if tc.want != "" {
				g.Expect(string(b)).To(Equal(tc.want))
			} else {
				g.Expect(b).To(HaveLen(tc.size))
			}
			var back []snsv1alpha1.FriendPair
			g.Expect(json.Unmarshal(b, &back)).To(Succeed())
			g.Expect(back).To(Equal(tc.pairs))
		})
	}
}
