package v1alpha1_test

import (
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// externalConfig is a valid config whose only step is external, with params.
func externalConfig(ns string, params map[string]string) *snsv1alpha1.CallbackConfig {
	c := validConfig(ns)
	c.Spec.Cleanup[0].Job = nil
	c.Spec.Cleanup[0].External = &snsv1alpha1.ExternalStep{Params: params}
	return c
}

func TestExternalParamsValidation(t *testing.T) {
	ns := env.Namespace(t)
	many := map[string]string{}
	for i := range 33 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []struct {
		name   string
		params map[string]string
		want   []string
	}{
		{"33 entries", many, []string{"spec.cleanup[0].external.params", "must have at most 32 items"}},
		{"key starts with a digit", map[string]string{"1url": "x"},
			[]string{"spec.cleanup[0].external.params", "params keys are 1 to 63 letters"}},
		{"key with a slash", map[string]string{"base/url": "x"},
			[]string{"spec.cleanup[0].external.params", "params keys are 1 to 63 letters"}},
		{"key of 64 characters", map[string]string{"k" + strings.Repeat("x", 63): "x"},
			[]string{"spec.cleanup[0].external.params", "params keys are 1 to 63 letters"}},
		{"value over 1024 bytes", map[string]string{"url": strings.Repeat("x", 1025)},
			[]string{"spec.cleanup[0].external.params", "params values are at most 1024 bytes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectInvalid(NewWithT(t), env.Client.Create(t.Context(), externalConfig(ns, tc.params)), tc.want...)
		})
	}

	t.Run("within bounds", func(t *testing.T) {
		g := NewWithT(t)
		params := map[string]string{
			"endpoint":                    "https://chat.example.com/api",
			"group-id":                    "@TGS#2C5SZEAEF",
			"k" + strings.Repeat("x", 62): strings.Repeat("v", 1024),
			"Mixed.Case_key-1":            "",
		}
		for i := range 28 {
			params[fmt.Sprintf("extra%d", i)] = "v"
		}
		c := externalConfig(ns, params)
		g.Expect(env.Client.Create(t.Context(), c)).To(Succeed())
		got := &snsv1alpha1.CallbackConfig{}
		g.Expect(env.Client.Get(t.Context(), client.ObjectKeyFromObject(c), got)).To(Succeed())
		g.Expect(got.Spec.Cleanup[0].External.Params).To(Equal(params))
	})
}

func TestStepCheckpointIsBounded(t *testing.T) {
	g := NewWithT(t)
	fd := validDeletion(env.Namespace(t), 1)
	g.Expect(env.Client.Create(t.Context(), fd)).To(Succeed())

	fd.Status.Steps = []snsv1alpha1.StepStatus{{Name: "chat", Type: snsv1alpha1.StepTypeExternal, Phase: snsv1alpha1.PhaseRunning,
		Checkpoint: strings.Repeat("c", 4097)}}
	expectInvalid(g, env.Client.Status().Update(t.Context(), fd), "status.steps[0].checkpoint", "may not be more than 4096")

	fd.Status.Steps[0].Checkpoint = strings.Repeat("c", 4096)
	g.Expect(env.Client.Status().Update(t.Context(), fd)).To(Succeed())
}
