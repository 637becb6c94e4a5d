// Package v1alpha1 holds the sns.imcallback.io/v1alpha1 API: CallbackConfig,
// which configures one Tencent Cloud IM app's friend-delete callbacks, and
// FriendDeletion, one accepted Sns.CallbackFriendDelete callback.
//
// +kubebuilder:object:generate=true
// +groupName=sns.imcallback.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "sns.imcallback.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
