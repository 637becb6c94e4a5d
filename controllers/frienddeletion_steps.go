package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers/internal/stepstatus"
)

// reconcileSteps runs the steps in order: finished steps are skipped, the
// first unfinished one is started or followed, and the next one starts in
// the same pass as soon as it succeeds. A failed step stops the rest.
func (r *FriendDeletionReconciler) reconcileSteps(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig) (ctrl.Result, error) {
	if !stepsMayStart(fd) {
		return ctrl.Result{}, nil
	}
	for i := range fd.Status.Steps {
		st := &fd.Status.Steps[i]
		switch st.Phase {
		case snsv1alpha1.PhaseSucceeded:
			continue
		case snsv1alpha1.PhaseFailed:
			return ctrl.Result{}, nil
		}
		log := ctrl.LoggerFrom(ctx).WithValues("step", st.Name, "stepType", st.Type)
		res, err := r.reconcileStep(ctrl.LoggerInto(ctx, log), p, fd, cfg, st.Name)
		if err != nil {
			return res, fmt.Errorf("step %q: %w", st.Name, err)
		}
		// reconcileStep may have replaced fd's status (a fresh read), so
		// look the step up again.
		if st = stepstatus.Find(fd, st.Name); st == nil || st.Phase != snsv1alpha1.PhaseSucceeded {
			return res, nil
		}
	}
	return ctrl.Result{}, nil
}

// reconcileStep starts or follows one step. A Pending step takes the
// config's current definition of its name, kind included; when the config
// or its entry is gone the step fails (ConfigNotFound, StepRemoved). A
// Running job step follows its Job to the end even then (or fails, if its
// Job was never created); a Running http or external step needs its
// definition and fails without it.
func (r *FriendDeletionReconciler) reconcileStep(ctx context.Context, p *statusPatcher, fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, name string) (ctrl.Result, error) {
	st := stepstatus.Find(fd, name)
	spec := findCleanupStep(cfg, name)
	if st.Phase == snsv1alpha1.PhasePending && spec != nil {
		st.Type = cleanupStepType(*spec)
	}
	if spec != nil && cleanupStepType(*spec) != st.Type {
		spec = nil // the name now means another kind of step
	}
	if spec == nil && !(st.Type == snsv1alpha1.StepTypeJob && st.Phase == snsv1alpha1.PhaseRunning) {
		reason, msg := stepGone(fd, cfg, st)
		stepstatus.Mark(fd, st, snsv1alpha1.PhaseFailed, reason, msg, r.now())
		return ctrl.Result{}, nil
	}
	switch st.Type {
	case snsv1alpha1.StepTypeJob:
		return r.reconcileJobStep(ctx, p, fd, cfg, spec, st)
	case snsv1alpha1.StepTypeHTTP:
		return r.reconcileHTTPStep(ctx, p, fd, spec.HTTP, name)
	default:
		return r.reconcileExternalStep(ctx, fd, spec.External, st)
	}
}

// stepGone is the reason and message of a step whose definition is gone:
// ConfigNotFound when the whole config is, else StepRemoved.
func stepGone(fd *snsv1alpha1.FriendDeletion, cfg *snsv1alpha1.CallbackConfig, st *snsv1alpha1.StepStatus) (string, string) {
	if cfg == nil {
		return snsv1alpha1.ReasonConfigNotFound, fmt.Sprintf("CallbackConfig %q was deleted.", fd.Spec.ConfigName)
	}
	return snsv1alpha1.ReasonStepRemoved, fmt.Sprintf("CallbackConfig %q no longer has a %s step named %q.", fd.Spec.ConfigName, st.Type, st.Name)
}

// findCleanupStep returns the config's step of that name, or nil.
func findCleanupStep(cfg *snsv1alpha1.CallbackConfig, name string) *snsv1alpha1.CleanupStep {
	if cfg == nil {
		return nil
	}
	for i := range cfg.Spec.Cleanup {
		if cfg.Spec.Cleanup[i].Name == name {
			return &cfg.Spec.Cleanup[i]
		}
	}
	return nil
}

// cleanupStepType is the kind of a config's cleanup step.
func cleanupStepType(s snsv1alpha1.CleanupStep) snsv1alpha1.StepType {
	switch {
	case s.Job != nil:
		return snsv1alpha1.StepTypeJob
	case s.HTTP != nil:
		return snsv1alpha1.StepTypeHTTP
	default:
		return snsv1alpha1.StepTypeExternal
	}
}
