package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxPairs is the most pairs one callback carries: v4/sns/friend_delete takes
// up to 1000 accounts, and a two-way delete reports both directions.
const MaxPairs = 2000

// FriendDeletionSpec is one accepted Sns.CallbackFriendDelete callback, as
// received. It never changes after the receiver stores it.
// +kubebuilder:validation:XValidation:rule="self.pairCount == size(self.pairs)",message="pairCount must equal the number of pairs"
type FriendDeletionSpec struct {
	// configName is the CallbackConfig, in the same namespace, that accepted
	// the callback.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ConfigName string `json:"configName"`

	// sdkAppID is the SDKAppID the callback carried.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=20
	// +kubebuilder:validation:Pattern=`^[0-9]{1,20}$`
	SDKAppID string `json:"sdkAppID"`

	// pairs is the callback's PairList, each duplicate kept once: for each
	// pair, to was deleted from the friend list of from.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2000
	Pairs []FriendPair `json:"pairs"`

	// pairCount is the number of pairs, for printing and selection.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2000
	PairCount int32 `json:"pairCount"`

	// clientIP is the ClientIP query parameter: the address of the client
	// that asked for the deletion.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	ClientIP string `json:"clientIP,omitempty"`

	// optPlatform is the OptPlatform query parameter, such as RESTAPI, Web,
	// Android or iOS.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	OptPlatform string `json:"optPlatform,omitempty"`

	// requestID is the callback's request id (RequestID or RequestId query
	// parameter) when the IM backend sent one.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	RequestID string `json:"requestID,omitempty"`

	// receivedAt is when the receiver accepted the callback.
	// +required
	ReceivedAt metav1.Time `json:"receivedAt"`
}

// FriendPair is one deleted friendship: to was deleted from the friend list of
// from.
type FriendPair struct {
	// from is the From_Account: the user whose friend list lost to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	From string `json:"from"`

	// to is the To_Account: the user removed from from's friend list.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	To string `json:"to"`
}

// Phase is where a FriendDeletion, or one of its steps, stands.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed
type Phase string

const (
	// PhasePending: nothing has started yet.
	PhasePending Phase = "Pending"
	// PhaseRunning: work has started and not finished.
	PhaseRunning Phase = "Running"
	// PhaseSucceeded: every step succeeded.
	PhaseSucceeded Phase = "Succeeded"
	// PhaseFailed: a step failed for good.
	PhaseFailed Phase = "Failed"
)

// Finished reports whether the phase is final.
func (p Phase) Finished() bool { return p == PhaseSucceeded || p == PhaseFailed }

// StepType is the kind of a cleanup step.
// +kubebuilder:validation:Enum=Job;HTTP;External
type StepType string

const (
	// StepTypeJob runs a batch/v1 Job.
	StepTypeJob StepType = "Job"
	// StepTypeHTTP POSTs to a URL.
	StepTypeHTTP StepType = "HTTP"
	// StepTypeExternal is done by another reconciler.
	StepTypeExternal StepType = "External"
)

// StepStatus is the state of one cleanup step.
type StepStatus struct {
	// name is the cleanup step's name in the CallbackConfig.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	Name string `json:"name"`

	// type is the step's kind: Job, HTTP or External.
	// +required
	Type StepType `json:"type"`

	// phase is where the step stands.
	// +required
	Phase Phase `json:"phase"`

	// attempts counts the tries so far: HTTP requests sent (or external
	// attempts reported); for a job step, 1 once its Job was created (written
	// at once, so a Job found missing later is failed, never created again;
	// for a batch, on the first member only) plus the Job's failed pods.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Attempts int32 `json:"attempts,omitempty"`

	// message says what happened last, for people.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// jobName is the Job a Job step created.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	JobName string `json:"jobName,omitempty"`

	// request is the method and URL an HTTP step calls, without query string.
	// +optional
	// +kubebuilder:validation:MaxLength=2100
	Request string `json:"request,omitempty"`

	// nextAttemptTime is when a failed attempt of an HTTP or external step
	// is tried again.
	// +optional
	NextAttemptTime *metav1.Time `json:"nextAttemptTime,omitempty"`

	// checkpoint is where an external step's reconciler has got to, in its
	// own format (cleanup.Step.SaveCheckpoint), so that a restarted
	// reconciler resumes instead of redoing the work. At most 4096 bytes.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Checkpoint string `json:"checkpoint,omitempty"`

	// startTime is when the step started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the step succeeded or failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// FriendDeletionStatus is the progress of a FriendDeletion's cleanup.
type FriendDeletionStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase sums up the steps: Pending, Running, Succeeded when every step
	// succeeded, Failed when one failed for good.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// steps holds one entry per cleanup step, fixed when the FriendDeletion
	// is first reconciled.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Steps []StepStatus `json:"steps,omitempty"`

	// conditions holds Ready and one condition per step.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=32
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// verification is the check of the pairs against the IM backend, set
	// on first sight when the config has spec.verify. Until it is
	// complete no step starts.
	// +optional
	Verification *Verification `json:"verification,omitempty"`

	// completionTime is when the FriendDeletion succeeded or failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// Relation letters in Verification.relations, one per pair, as the IM
// backend's friend_check (CheckResult_Type_Both) answered for from and to.
const (
	// RelationUnknown: not answered yet.
	RelationUnknown = '?'
	// RelationNone: CheckResult_Type_NoRelation, the friendship is gone on
	// both sides. Only these pairs go to the cleanup steps.
	RelationNone = 'N'
	// RelationBoth: CheckResult_Type_BothWay, each has the other.
	RelationBoth = 'W'
	// RelationFromHasTo: from still has to in its friend list
	// (CheckResult_Type_AWithB).
	RelationFromHasTo = 'A'
	// RelationToHasFrom: to still has from in its friend list
	// (CheckResult_Type_BWithA).
	RelationToHasFrom = 'B'
)

// Verification is the outcome of checking a FriendDeletion's pairs with
// the IM backend, compact enough for 2000 pairs.
type Verification struct {
	// relations holds one letter per entry of spec.pairs, in order: ? not
	// answered yet, N no relation (cleaned up), W both ways, A from still
	// has to, B to still has from (W, A and B are skipped).
	// +optional
	// +kubebuilder:validation:MaxLength=2000
	// +kubebuilder:validation:Pattern=`^[?NWAB]*$`
	Relations string `json:"relations,omitempty"`

	// verified is "<cleared>/<pairs>": how many pairs the IM backend
	// confirmed gone, of all pairs. It is what kubectl get shows.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Verified string `json:"verified,omitempty"`

	// cleared counts the pairs with no relation left: the steps' input.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Cleared int32 `json:"cleared,omitempty"`

	// skipped counts the pairs that are still (or again) friendships.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Skipped int32 `json:"skipped,omitempty"`

	// attempts counts the verification attempts that failed (REST errors,
	// an ErrorCode, a pair's ResultCode); the next waits longer.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Attempts int32 `json:"attempts,omitempty"`

	// nextAttemptTime is when a failed attempt is tried again.
	// +optional
	NextAttemptTime *metav1.Time `json:"nextAttemptTime,omitempty"`

	// refusedCredentials is set when the IM backend refused the UserSig:
	// the secret key Secret's resourceVersion and the CallbackConfig's
	// generation then, as "<resourceVersion>/<generation>". No request is
	// sent again until either changes.
	// +optional
	// +kubebuilder:validation:MaxLength=96
	RefusedCredentials string `json:"refusedCredentials,omitempty"`

	// completionTime is when every pair got an answer.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// FriendDeletion is one accepted Sns.CallbackFriendDelete callback: a list of
// deleted friendships and the progress of the cleanup they started.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fdel,categories=imcallback
// +kubebuilder:printcolumn:name="CONFIG",type=string,JSONPath=`.spec.configName`
// +kubebuilder:printcolumn:name="FROM",type=string,JSONPath=`.spec.pairs[0].from`
// +kubebuilder:printcolumn:name="TO",type=string,JSONPath=`.spec.pairs[0].to`
// +kubebuilder:printcolumn:name="PAIRS",type=integer,JSONPath=`.spec.pairCount`
// +kubebuilder:printcolumn:name="VERIFIED",type=string,JSONPath=`.status.verification.verified`
// +kubebuilder:printcolumn:name="PHASE",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type FriendDeletion struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the callback as received; immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
	Spec FriendDeletionSpec `json:"spec"`

	// status is the cleanup's progress.
	// +optional
	Status FriendDeletionStatus `json:"status,omitempty"`
}

// FriendDeletionList is a list of FriendDeletions.
//
// +kubebuilder:object:root=true
type FriendDeletionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FriendDeletion `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FriendDeletion{}, &FriendDeletionList{})
}
