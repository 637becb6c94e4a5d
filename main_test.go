package main

import (
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		opts options
		want string // "" when valid
	}{
		"all":                                 {opts: options{role: roleAll, leaderElect: true}},
		"controllers leader-elected":          {opts: options{role: roleControllers, leaderElect: true, enableExampleStep: true}},
		"receiver":                            {opts: options{role: roleReceiver}},
		"receiver watching namespaces":        {opts: options{role: roleReceiver, watchNamespaces: "im-prod, im-staging"}},
		"unknown role":                        {opts: options{role: "webhook"}, want: `--role="webhook"`},
		"receiver with leader election":       {opts: options{role: roleReceiver, leaderElect: true}, want: "drop --leader-elect"},
		"receiver with the example step":      {opts: options{role: roleReceiver, enableExampleStep: true}, want: "--enable-example-reconciler"},
		"a namespace that is no name":         {opts: options{role: roleAll, watchNamespaces: "im-prod,Im_Staging"}, want: `"Im_Staging"`},
		"empty entries in the namespace list": {opts: options{role: roleAll, watchNamespaces: ",im-prod,,"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.opts.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validate() = %v, want an error mentioning %s", err, tc.want)
			}
		})
	}
}

func TestNamespaces(t *testing.T) {
	if got := namespaces(""); got != nil {
		t.Errorf(`namespaces("") = %v, want nil (every namespace)`, got)
	}
	got := namespaces(" im-prod,,im-staging ,im-prod")
	if len(got) != 2 {
		t.Errorf("namespaces = %v, want im-prod and im-staging", got)
	}
	for _, ns := range []string{"im-prod", "im-staging"} {
		if _, ok := got[ns]; !ok {
			t.Errorf("namespaces = %v, lacks %s", got, ns)
		}
	}
}
