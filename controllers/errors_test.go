package controllers

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestIsPermanent(t *testing.T) {
	jobs := schema.GroupResource{Group: "batch", Resource: "jobs"}
	webhookDenial := &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusBadRequest,
		Message: `admission webhook "jobs.policy.example.com" denied the request: images must come from registry.example.com`,
	}}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("connection refused"), false},
		{"marked permanent", permanent(errors.New("too large")), true},
		{"marked permanent, wrapped", fmt.Errorf("step: %w", permanent(errors.New("too large"))), true},
		{"Invalid", apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "j",
			field.ErrorList{field.Invalid(field.NewPath("spec"), "x", "bad")}), true},
		{"Invalid, wrapped", fmt.Errorf("creating Job j: %w", apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "j", nil)), true},
		{"BadRequest", apierrors.NewBadRequest("bad"), true},
		{"RequestEntityTooLarge", apierrors.NewRequestEntityTooLargeError("limit is 3145728"), true},
		{"webhook denial (400, no reason)", webhookDenial, true},
		{"webhook denial (403)", apierrors.NewForbidden(jobs, "j", errors.New(`admission webhook "x" denied the request: no`)), true},
		{"ValidatingAdmissionPolicy denial", apierrors.NewForbidden(jobs, "j",
			errors.New(`ValidatingAdmissionPolicy 'no-jobs' with binding 'no-jobs' denied request: failed expression: false`)), true},
		{"RBAC Forbidden", apierrors.NewForbidden(jobs, "j",
			errors.New(`User "system:serviceaccount:ops:operator" cannot create resource "jobs" in API group "batch"`)), false},
		{"quota Forbidden", apierrors.NewForbidden(jobs, "j", errors.New("exceeded quota: jobs, requested: count/jobs.batch=1")), false},
		{"Conflict", apierrors.NewConflict(jobs, "j", errors.New("modified")), false},
		{"AlreadyExists", apierrors.NewAlreadyExists(jobs, "j"), false},
		{"ServiceUnavailable", apierrors.NewServiceUnavailable("etcd"), false},
		{"Timeout", apierrors.NewTimeoutError("slow", 1), false},
		{"TooManyRequests", apierrors.NewTooManyRequests("slow down", 1), false},
		{"InternalError", apierrors.NewInternalError(errors.New("boom")), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := isPermanent(tc.err); got != tc.want {
				t.Errorf("isPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
