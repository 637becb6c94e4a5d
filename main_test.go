package main

import (
	"strings"
	"testing"

	"github.com/imcallback/friend-deletion-operator/controllers/manager"
)

func TestValidate(t *testing.T) {
	opts := func(role, watch string, leaderElect bool) manager.Options {
		o := manager.DefaultOptions()
		o.Role, o.WatchNamespaces, o.Manager.LeaderElection = role, watch, leaderElect
		return o
	}
	for name, tc := range map[string]struct {
		opts    manager.Options
		example bool
		want    string // "" when valid
	}{
		"all":                                 {opts: opts(manager.RoleAll, "", true)},
		"controllers leader-elected":          {opts: opts(manager.RoleControllers, "", true), example: true},
		"receiver":                            {opts: opts(manager.RoleReceiver, "", false)},
		"receiver watching namespaces":        {opts: opts(manager.RoleReceiver, "im-prod, im-staging", false)},
		"unknown role":                        {opts: opts("webhook", "", false), want: `--role="webhook"`},
		"receiver with leader election":       {opts: opts(manager.RoleReceiver, "", true), want: "drop --leader-elect"},
		"receiver with the example step":      {opts: opts(manager.RoleReceiver, "", false), example: true, want: "--enable-example-reconciler"},
		"a namespace that is no name":         {opts: opts(manager.RoleAll, "im-prod,Im_Staging", false), want: `"Im_Staging"`},
		"empty entries in the namespace list": {opts: opts(manager.RoleAll, ",im-prod,,", false)},
	} {
		t.Run(name, func(t *testing.T) {
			err := validate(tc.opts, tc.example)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validate() = %v, want an error mentioning %s", err, tc.want)
			}
		})
	}
}
