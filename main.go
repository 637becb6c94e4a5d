// Command manager runs the friend-deletion-operator: the callback receiver,
// which turns Tencent Cloud IM Sns.CallbackFriendDelete callbacks into
// FriendDeletion objects on every replica, and the controllers, which run each
// FriendDeletion's cleanup steps on the elected leader. --role chooses which
// of the two a process runs (see controllers/manager).
//
// It is a thin caller of controllers/manager, which a team that writes its
// own cleanup step reconciler calls the same way from its own module.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/imcallback/friend-deletion-operator/controllers/examples/audit"
	"github.com/imcallback/friend-deletion-operator/controllers/manager"
	"github.com/imcallback/friend-deletion-operator/internal/version"
)

func main() {
	opts := manager.DefaultOptions()
	opts.BindFlags(flag.CommandLine)
	enableExample := flag.Bool("enable-example-reconciler", false, "Run the worked example of a custom cleanup-step reconciler.")
	printVersion := flag.Bool("version", false, "Print the version and commit the manager was built from, then exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	setMemoryLimit(memoryLimit(os.Getenv(memoryLimitEnv), memlimit.FromCgroup))

	if err := run(opts, *enableExample); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

func run(opts manager.Options, enableExample bool) error {
	if err := validate(opts, enableExample); err != nil {
		return err
	}
	var setups []manager.Setup
	if enableExample {
		setups = append(setups, audit.SetupWithManager)
	}
	return manager.Run(ctrl.SetupSignalHandler(), opts, setups...)
}

// validate reports a flag combination that cannot work.
func validate(opts manager.Options, enableExample bool) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if enableExample && !opts.RunsControllers() {
		return fmt.Errorf("--enable-example-reconciler needs --role=controllers or all")
	}
	return nil
}

// memoryLimitRatio is the share of the container's memory limit the Go
// runtime aims under: the rest is for what it does not count (thread
// stacks outside the heap, the binary's own pages).
const memoryLimitRatio = 0.9

// memoryLimitEnv names the variable the chart and the bundle set to the
// container's memory limit in bytes, through the downward API
// (resourceFieldRef limits.memory). It is not GOMEMLIMIT itself: the Go
// runtime would take the whole limit as its target and leave no headroom,
// and setMemoryLimit leaves a GOMEMLIMIT it finds alone.
const memoryLimitEnv = "MEMORY_LIMIT"

// memoryLimit is the container's memory limit: value, the content of
// MEMORY_LIMIT, when it is a number of bytes, else what fallback (the
// cgroup) says.
func memoryLimit(value string, fallback memlimit.Provider) memlimit.Provider {
	if value == "" {
		return fallback
	}
	n, err := strconv.ParseUint(value, 10, 64)
	if err != nil || n == 0 {
		ctrl.Log.Info("ignoring "+memoryLimitEnv+": not a number of bytes; using the cgroup's memory limit", "value", value)
		return fallback
	}
	return memlimit.Limit(n)
}

// setMemoryLimit sets the Go runtime's soft memory limit (GOMEMLIMIT) to
// 90% of the container's memory limit (from MEMORY_LIMIT or its cgroup)
// unless GOMEMLIMIT is set, so that the garbage collector works harder as the heap nears the
// limit instead of letting it grow to twice what is live, which at start,
// while the caches fill, can exceed the limit and get the pod OOM-killed.
// AUTOMEMLIMIT=off turns it off; AUTOMEMLIMIT=0.8 sets another ratio.
// The limit comes from limit (see memoryLimit).
func setMemoryLimit(limit memlimit.Provider) {
	log := slog.New(logr.ToSlogHandler(ctrl.Log.WithName("memlimit")))
	_, err := memlimit.Set(memlimit.WithProvider(limit), memlimit.WithRatio(memoryLimitRatio), memlimit.WithLogger(log))
	switch {
	case errors.Is(err, memlimit.ErrCgroupsNotSupported), errors.Is(err, memlimit.ErrNoCgroup):
		ctrl.Log.V(1).Info("no cgroup memory limit to derive GOMEMLIMIT from", "reason", err.Error())
	case err != nil:
		ctrl.Log.Error(err, "setting GOMEMLIMIT from the cgroup memory limit; running without")
	}
}
