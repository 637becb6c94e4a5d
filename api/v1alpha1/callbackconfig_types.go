package v1alpha1

import (
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CallbackConfigSpec describes one Tencent Cloud IM app whose
// Sns.CallbackFriendDelete callbacks this namespace accepts, and the cleanup
// each accepted callback starts.
type CallbackConfigSpec struct {
	// sdkAppID is the SDKAppID the IM console assigned to the app. A callback
	// whose SdkAppid query parameter differs is refused.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=20
	// +kubebuilder:validation:Pattern=`^[0-9]{1,20}$`
	SDKAppID string `json:"sdkAppID"`

	// auth turns on callback authentication: every callback must carry
	// RequestTime and Sign, with Sign the lowercase hex SHA-256 of the token
	// followed by RequestTime. Leave it out only when the IM console has
	// callback authentication off.
	// +optional
	Auth *CallbackAuth `json:"auth,omitempty"`

	// allowedSourceCIDRs, when set, refuses callbacks from any address outside
	// these ranges (for example the IM backend's egress list from
	// v4/ConfigSvc/GetIPList).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	AllowedSourceCIDRs []CIDR `json:"allowedSourceCIDRs,omitempty"`

	// cleanup lists the steps every FriendDeletion of this config runs, in
	// order. Step names are unique.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(s, self.exists_one(t, t.name == s.name))",message="cleanup step names must be unique"
	Cleanup []CleanupStep `json:"cleanup"`

	// retention says how long finished FriendDeletions are kept before they
	// are deleted, with their Jobs and ConfigMaps.
	// +optional
	// +kubebuilder:default={}
	Retention Retention `json:"retention,omitempty"`

	// verify, when set, asks the IM backend (v4/sns/friend_check) whether
	// each pair's friendship is really gone before the first cleanup step
	// of a FriendDeletion runs. Only pairs with no relation left go to the
	// steps; the others are skipped (or fail the deletion, see
	// stillFriends). A FriendDeletion fixes on first sight whether it is
	// verified.
	// +optional
	Verify *Verify `json:"verify,omitempty"`

	// suspend, when true, answers every callback FAIL and creates nothing.
	// FriendDeletions already stored go on running.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// StillFriendsPolicy says what happens to a pair the IM backend still (or
// again) reports as a friendship.
// +kubebuilder:validation:Enum=Skip;Fail
type StillFriendsPolicy string

const (
	// StillFriendsSkip leaves the pair out of every step's input and counts
	// it in status; the other pairs go on.
	StillFriendsSkip StillFriendsPolicy = "Skip"
	// StillFriendsFail fails the whole FriendDeletion, running no step.
	StillFriendsFail StillFriendsPolicy = "Fail"
)

// Verify configures the check of each pair against the IM backend.
type Verify struct {
	// endpoint is the IM REST API's base URL: https:// and the app's region
	// host, such as https://adminapisgp.im.qcloud.com (Singapore) or
	// https://console.tim.qq.com (China). The operator appends
	// /v4/sns/friend_check and the query string.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getQuery().size() == 0",message="endpoint must be an absolute http or https URL without a query"
	Endpoint string `json:"endpoint"`

	// identifier is the app administrator's UserID that signs the REST
	// calls (the identifier query parameter and the UserSig's).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[-_a-zA-Z0-9]+$`
	Identifier string `json:"identifier"`

	// secretKeyRef names the Secret key holding the app's secret key, from
	// which each UserSig is computed. Changing the Secret takes effect
	// without a restart, and retries verifications the IM backend refused
	// as unauthenticated.
	// +required
	SecretKeyRef SecretKeyRef `json:"secretKeyRef"`

	// requestsPerSecond bounds the friend_check calls per second for this
	// config, across all its FriendDeletions. Tencent allows 200 per second
	// per app; the default, 20, leaves the rest to the app's other REST
	// callers. Between 1 and 200.
	// +optional
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=200
	RequestsPerSecond int32 `json:"requestsPerSecond,omitempty"`

	// stillFriends says what to do with a pair whose friendship exists (on
	// either side): Skip (the default) leaves it out of every step's input;
	// Fail fails the FriendDeletion without running any step.
	// +optional
	// +kubebuilder:default=Skip
	StillFriends StillFriendsPolicy `json:"stillFriends,omitempty"`
}

// CIDR is an IPv4 or IPv6 address range such as 203.0.113.0/24.
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 203.0.113.0/24"
type CIDR string

// CallbackAuth holds the callback authentication settings.
type CallbackAuth struct {
	// tokenSecretRef names the Secret key holding the callback authentication
	// token set in the IM console (1 to 128 characters). Rotating the Secret
	// takes effect without a restart.
	// +required
	TokenSecretRef SecretKeyRef `json:"tokenSecretRef"`

	// maxClockSkew is how far a callback's RequestTime may be from the
	// receiver's clock, either way, before the callback is refused as a
	// replay. Between 1s and 1h.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="maxClockSkew must be between 1s and 1h"
	MaxClockSkew *metav1.Duration `json:"maxClockSkew,omitempty"`
}

// SecretKeyRef names one key of a Secret in the object's namespace.
type SecretKeyRef struct {
	// name is the Secret's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key is the key in the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ConfigMapKeyRef names one key of a ConfigMap in the object's namespace.
type ConfigMapKeyRef struct {
	// name is the ConfigMap's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key is the key in the ConfigMap's data. Defaults to ca.crt.
	// +optional
	// +kubebuilder:default="ca.crt"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// SecretRef names a Secret in the object's namespace.
type SecretRef struct {
	// name is the Secret's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// CleanupStep is one piece of cleanup work. It sets exactly one of job, http
// or external.
// +kubebuilder:validation:XValidation:rule="[has(self.job), has(self.http), has(self.external)].filter(x, x).size() == 1",message="a cleanup step sets exactly one of job, http or external"
// +kubebuilder:validation:XValidation:rule="!has(self.batch) || has(self.job)",message="batch is only valid with job"
type CleanupStep struct {
	// name identifies the step in the FriendDeletion's status and in the
	// names of what it creates. A DNS label of at most 40 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// job runs a batch/v1 Job from this template for each FriendDeletion
	// (for each group of them, with batch).
	// The container gets the FriendDeletion's details through environment
	// variables and a pairs file (see the README's Job contract). The pod
	// template's restartPolicy must be Never (the default) or OnFailure, and
	// ttlSecondsAfterFinished is refused: a Job that deletes itself takes
	// its outcome with it (the operator deletes a finished Job once its
	// outcome is recorded, unless retention.keepFinishedJobs is set).
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.spec.ttlSecondsAfterFinished)",message="job.spec.ttlSecondsAfterFinished is not allowed: the operator deletes a finished Job once its outcome is recorded"
	// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.spec.template.spec) || !has(self.spec.template.spec.restartPolicy) || self.spec.template.spec.restartPolicy in ['Never', 'OnFailure']",message="job.spec.template.spec.restartPolicy must be Never or OnFailure"
	Job *batchv1.JobTemplateSpec `json:"job,omitempty"`

	// batch, valid only with job, runs one Job for a group of this
	// config's FriendDeletions that are ready for the step, instead of one
	// Job each. The Job's pairs file then lists every member's pairs, each
	// with its FriendDeletion's name (see the README's Job contract).
	// +optional
	Batch *JobBatch `json:"batch,omitempty"`

	// http POSTs the FriendDeletion as JSON to a URL.
	// +optional
	HTTP *HTTPStep `json:"http,omitempty"`

	// external runs nothing here: another reconciler, registered under the
	// step's name, does the work and reports the step's outcome.
	// +optional
	External *ExternalStep `json:"external,omitempty"`
}

// JobBatch says how a job step's FriendDeletions are grouped into Jobs. A
// group forms as soon as it reaches maxDeletions or maxPairs, or once the
// first of its FriendDeletions has waited maxWait.
type JobBatch struct {
	// maxDeletions is how many FriendDeletions one Job serves at most.
	// 1 to 1000.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxDeletions int32 `json:"maxDeletions"`

	// maxPairs, when set, caps the pairs of one Job (the sum of its
	// FriendDeletions' pairs). A FriendDeletion with more pairs than
	// maxPairs gets a Job of its own. Unset: no cap but maxDeletions and
	// the pairs file's size (1 MiB). 1 to 2000000.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2000000
	MaxPairs *int32 `json:"maxPairs,omitempty"`

	// maxWait is how long the first FriendDeletion ready for the step waits
	// for others before a Job starts with those there are. Counted from
	// when it became ready: its creation for the first step, else the
	// completion of the step before. 0s to 10m.
	// +optional
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('10m')",message="maxWait must be between 0s and 10m"
	MaxWait *metav1.Duration `json:"maxWait,omitempty"`
}

// HTTPStep POSTs a JSON document describing the FriendDeletion to a URL.
type HTTPStep struct {
	// url is the http or https URL to POST to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https']",message="url must be an absolute http or https URL"
	URL string `json:"url"`

	// headersSecretRef names a Secret whose every key is sent as an HTTP
	// header with the key's value, for example Authorization.
	// +optional
	HeadersSecretRef *SecretRef `json:"headersSecretRef,omitempty"`

	// caBundleRef names a ConfigMap key holding the PEM certificates of the
	// certificate authorities to trust for an https url, for endpoints
	// whose certificate a private CA issued. When set, only these CAs are
	// trusted for this step; when unset, the system's roots are.
	// +optional
	CABundleRef *ConfigMapKeyRef `json:"caBundleRef,omitempty"`

	// timeout bounds each attempt. Between 1s and 5m.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('5m')",message="timeout must be between 1s and 5m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// maxAttempts is how many times the POST is tried before the step fails.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=20
	MaxAttempts int32 `json:"maxAttempts,omitempty"`
}

// ExternalStep is done by a reconciler outside the operator's built-in ones.
type ExternalStep struct {
	// deadline, when set, fails the step if no outcome is reported this long
	// after the step started. Between 1s and 720h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('720h')",message="deadline must be between 1s and 720h"
	Deadline *metav1.Duration `json:"deadline,omitempty"`

	// params is handed to the step's reconciler with each FriendDeletion
	// (cleanup.Step.Params): an endpoint, a group id, anything the
	// reconciler needs from the config rather than from a process flag. At
	// most 32 entries; keys are 1 to 63 letters, digits, '-', '_' or '.',
	// starting with a letter; values are at most 1024 bytes. Not for
	// secrets: a CallbackConfig is readable by whoever may read the config.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 63 && k.matches('^[A-Za-z][-A-Za-z0-9_.]*$'))",message="params keys are 1 to 63 letters, digits, '-', '_' or '.', starting with a letter"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 1024)",message="params values are at most 1024 bytes"
	Params map[string]string `json:"params,omitempty"`
}

// Retention says how long, and how many, finished FriendDeletions are kept,
// and whether their finished Jobs are.
type Retention struct {
	// succeeded is how long a Succeeded FriendDeletion is kept.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="succeeded must not be negative"
	Succeeded *metav1.Duration `json:"succeeded,omitempty"`

	// failed is how long a Failed FriendDeletion is kept.
	// +optional
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="failed must not be negative"
	Failed *metav1.Duration `json:"failed,omitempty"`

	// maxSucceeded, when set, is how many Succeeded FriendDeletions of this
	// config are kept at most, besides the age limit: when there are more,
	// the oldest (by completionTime) are deleted first, as CronJob's
	// successfulJobsHistoryLimit does. Unset: no count limit. 0 to 100000.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	MaxSucceeded *int32 `json:"maxSucceeded,omitempty"`

	// maxFailed, when set, is how many Failed FriendDeletions of this config
	// are kept at most, the oldest (by completionTime) deleted first. Unset:
	// no count limit. 0 to 100000.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	MaxFailed *int32 `json:"maxFailed,omitempty"`

	// keepFinishedJobs, when true, keeps a job step's Job (and its pods)
	// until its FriendDeletion is deleted. By default a finished Job is
	// deleted, with its pods, as soon as its outcome is recorded in the
	// FriendDeletion's status, which is what counts.
	// +optional
	KeepFinishedJobs bool `json:"keepFinishedJobs,omitempty"`
}

// CallbackConfigStatus is what the operator last saw of a CallbackConfig.
type CallbackConfigStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions holds Ready: true when the config can accept callbacks;
	// VerifyReady, with spec.verify: true when its secret key Secret holds
	// the key; and, while callbacks for this config wait in a receiver replica's
	// spool for the API server, spool.sns.imcallback.io/<replica> with
	// reason CallbacksSpooled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// webhookPath is the receiver path to configure as the callback URL's
	// path in the IM console: /callbacks/<namespace>/<name>.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	WebhookPath string `json:"webhookPath,omitempty"`

	// lastCallbackTime is when the receiver last answered a callback for this
	// config, accepted or not. Updated every few seconds, not per callback.
	// +optional
	LastCallbackTime *metav1.Time `json:"lastCallbackTime,omitempty"`

	// acceptedCallbacks counts the callbacks stored as FriendDeletions.
	// +optional
	AcceptedCallbacks int64 `json:"acceptedCallbacks,omitempty"`

	// rejectedCallbacks counts the callbacks answered FAIL.
	// +optional
	RejectedCallbacks int64 `json:"rejectedCallbacks,omitempty"`
}

// CallbackConfig configures one Tencent Cloud IM app's Sns.CallbackFriendDelete
// callbacks: the SDKAppID to expect, how callbacks are authenticated, and the
// cleanup steps each accepted callback runs.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cbc,categories=imcallback
// +kubebuilder:printcolumn:name="SDKAPPID",type=string,JSONPath=`.spec.sdkAppID`
// +kubebuilder:printcolumn:name="READY",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="PATH",type=string,JSONPath=`.status.webhookPath`
// +kubebuilder:printcolumn:name="LAST CALLBACK",type=date,JSONPath=`.status.lastCallbackTime`
// +kubebuilder:printcolumn:name="SPOOLED",type=string,JSONPath=`.status.conditions[?(@.reason=="CallbacksSpooled")].message`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type CallbackConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired configuration.
	// +required
	Spec CallbackConfigSpec `json:"spec"`

	// status is what the operator last saw.
	// +optional
	Status CallbackConfigStatus `json:"status,omitempty"`
}

// CallbackConfigList is a list of CallbackConfigs.
//
// +kubebuilder:object:root=true
type CallbackConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallbackConfig `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CallbackConfig{}, &CallbackConfigList{})
}
