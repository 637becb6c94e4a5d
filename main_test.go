package main

import (
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"

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
		"controllers granting the receiver":   {opts: withReceiverSA(opts(manager.RoleControllers, "", true), "ops/fdo-receiver")},
		"a receiver account without namespace": {opts: withReceiverSA(opts(manager.RoleControllers, "", true), "fdo-receiver"),
			want: "--receiver-service-account"},
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

func TestSetMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for name, tc := range map[string]struct {
		env   map[string]string
		start int64 // the limit the runtime started with, from GOMEMLIMIT; 0 for none
		limit memlimit.Provider
		want  int64
	}{
		"90% of the container's limit": {limit: memlimit.Limit(256 * mib), want: 256 * mib * 9 / 10},
		"GOMEMLIMIT set: kept":         {env: map[string]string{"GOMEMLIMIT": "100MiB"}, start: 100 * mib, limit: memlimit.Limit(256 * mib), want: 100 * mib},
		"AUTOMEMLIMIT=off: no limit":   {env: map[string]string{"AUTOMEMLIMIT": "off"}, limit: memlimit.Limit(256 * mib), want: math.MaxInt64},
		"no limit in the cgroup":       {limit: func() (uint64, error) { return 0, memlimit.ErrNoLimit }, want: math.MaxInt64},
		"no cgroup":                    {limit: func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, want: math.MaxInt64},
		// The chart and the bundle: the limit through the downward API.
		"MEMORY_LIMIT: 90% of it": {env: map[string]string{"MEMORY_LIMIT": "268435456"},
			limit: func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, want: 256 * mib * 9 / 10},
		"MEMORY_LIMIT over the cgroup's": {env: map[string]string{"MEMORY_LIMIT": "201326592"},
			limit: memlimit.Limit(256 * mib), want: 192 * mib * 9 / 10},
		"MEMORY_LIMIT and GOMEMLIMIT: GOMEMLIMIT kept": {env: map[string]string{"MEMORY_LIMIT": "268435456", "GOMEMLIMIT": "100MiB"},
			start: 100 * mib, limit: memlimit.Limit(256 * mib), want: 100 * mib},
		"MEMORY_LIMIT not bytes: the cgroup's": {env: map[string]string{"MEMORY_LIMIT": "256Mi"},
			limit: memlimit.Limit(128 * mib), want: 128 * mib * 9 / 10},
	} {
		t.Run(name, func(t *testing.T) {
			for _, k := range []string{"GOMEMLIMIT", memoryLimitEnv} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			start := tc.start
			if start == 0 {
				start = math.MaxInt64
			}
			prev := debug.SetMemoryLimit(start) // as the runtime does from GOMEMLIMIT
			t.Cleanup(func() { debug.SetMemoryLimit(prev) })
			setMemoryLimit(memoryLimit(os.Getenv(memoryLimitEnv), tc.limit))
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Errorf("GOMEMLIMIT = %d MiB, want %d MiB", got/mib, tc.want/mib)
			}
		})
	}
}

func withReceiverSA(o manager.Options, sa string) manager.Options {
	o.Controllers.ReceiverServiceAccount = sa
	return o
}
