package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
)

// Labels the receiver puts on every FriendDeletion, and the controllers on
// everything they create, so that `kubectl get -l` finds them.
const (
	// LabelConfig holds the CallbackConfig's name.
	LabelConfig = "sns.imcallback.io/config"
	// LabelSDKAppID holds the SDKAppID.
	LabelSDKAppID = "sns.imcallback.io/sdkappid"
	// LabelFromHash holds a hash of the first pair's From_Account (account ids
	// are not valid label values). See FromAccountHash.
	LabelFromHash = "sns.imcallback.io/from-hash"
	// LabelFriendDeletion holds the owning FriendDeletion's name, on Jobs and
	// ConfigMaps.
	LabelFriendDeletion = "sns.imcallback.io/frienddeletion"
	// LabelStep holds the cleanup step's name, on Jobs and ConfigMaps.
	LabelStep = "sns.imcallback.io/step"
)

// Condition types.
const (
	// ConditionReady is True on a CallbackConfig that can accept callbacks,
	// and on a FriendDeletion whose every step succeeded.
	ConditionReady = "Ready"

	// ConditionVerified, on a FriendDeletion whose config verifies, is True
	// once every pair got an answer from the IM backend, and False while
	// verification waits, retries or was refused.
	ConditionVerified = "Verified"

	// ConditionVerifyReady, on a CallbackConfig with spec.verify, is True
	// when the secret key Secret holds the key (whether the IM backend
	// accepts it shows on each FriendDeletion's Verified condition).
	ConditionVerifyReady = "VerifyReady"

	// StepConditionPrefix starts the type of each FriendDeletion step's
	// condition: step.sns.imcallback.io/<step name>.
	StepConditionPrefix = "step.sns.imcallback.io/"

	// SpoolConditionPrefix starts the type of the CallbackConfig condition
	// a receiver replica sets while callbacks for the config wait in its
	// spool for the API server: spool.sns.imcallback.io/<replica>. The
	// replica removes it when its spool holds none.
	SpoolConditionPrefix = "spool.sns.imcallback.io/"
)

// SpoolConditionType is the condition type that reports the named receiver
// replica's spooled callbacks.
func SpoolConditionType(replica string) string { return SpoolConditionPrefix + replica }

// StepConditionType is the condition type that reports the named step.
func StepConditionType(step string) string { return StepConditionPrefix + step }

// Condition reasons, CamelCase as Kubernetes expects.
const (
	// ReasonConfigured: a CallbackConfig is ready to accept callbacks.
	ReasonConfigured = "Configured"
	// ReasonSuspended: a CallbackConfig has spec.suspend set.
	ReasonSuspended = "Suspended"
	// ReasonSecretNotFound: the token Secret does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonSecretKeyMissing: the token Secret lacks the key.
	ReasonSecretKeyMissing = "SecretKeyMissing"
	// ReasonInvalidToken: the token is empty or longer than 128 characters.
	ReasonInvalidToken = "InvalidToken"
	// ReasonCallbacksSpooled: callbacks for a CallbackConfig were
	// acknowledged from a receiver's spool and wait for the API server.
	ReasonCallbacksSpooled = "CallbacksSpooled"

	// ReasonPending: a step or FriendDeletion has not started.
	ReasonPending = "Pending"
	// ReasonRunning: work is under way.
	ReasonRunning = "Running"
	// ReasonSucceeded: the work succeeded.
	ReasonSucceeded = "Succeeded"
	// ReasonFailed: the work failed for good.
	ReasonFailed = "Failed"
	// ReasonRetrying: an attempt failed and another is scheduled.
	ReasonRetrying = "Retrying"
	// ReasonDeadlineExceeded: an external step got no outcome in time.
	ReasonDeadlineExceeded = "DeadlineExceeded"
	// ReasonConfigNotFound: the FriendDeletion's CallbackConfig is gone.
	ReasonConfigNotFound = "ConfigNotFound"
	// ReasonSecretKeyFound: the secret key Secret of spec.verify holds
	// the key.
	ReasonSecretKeyFound = "SecretKeyFound"
	// ReasonVerifying: the pairs are being checked with the IM backend.
	ReasonVerifying = "Verifying"
	// ReasonVerified: every pair was checked and none is a friendship.
	ReasonVerified = "Verified"
	// ReasonPairsSkipped: every pair was checked; some are still
	// friendships and are left out of the cleanup steps.
	ReasonPairsSkipped = "PairsSkipped"
	// ReasonNothingToClean: every pair is still a friendship; no step runs
	// and the FriendDeletion succeeds.
	ReasonNothingToClean = "NothingToClean"
	// ReasonStillFriends: a pair is still a friendship and the config's
	// verify.stillFriends is Fail; the FriendDeletion fails.
	ReasonStillFriends = "StillFriends"
	// ReasonVerifyAuthFailed: the IM backend refused the UserSig (wrong
	// secret key, identifier or SDKAppID); verification waits for the
	// secret key's Secret to change.
	ReasonVerifyAuthFailed = "VerifyAuthFailed"
	// ReasonVerifyRemoved: the config's spec.verify was removed before the
	// verification finished; every pair goes to the steps.
	ReasonVerifyRemoved = "VerifyRemoved"

	// ReasonStepRemoved: the config no longer has a step this
	// FriendDeletion fixed when it started.
	ReasonStepRemoved = "StepRemoved"
)

// FromAccountHash is the LabelFromHash value for an account: the first 16
// hex digits of its SHA-256. Select a user's FriendDeletions with
// `kubectl get fdel -l sns.imcallback.io/from-hash=<hash>`.
func FromAccountHash(account string) string {
	sum := sha256.Sum256([]byte(account))
	return hex.EncodeToString(sum[:8])
}
