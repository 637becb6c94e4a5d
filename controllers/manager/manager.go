// Package manager is the operator's entry point as a library: Run starts
// the callback receiver and the controllers, plus the setups of any
// reconcilers for external cleanup steps, in one controller-runtime
// manager. The operator's own main.go is a thin caller of it; a team that
// writes a reconciler builds its own binary the same way, from its own
// module:
//
//	func main() {
//		opts := manager.DefaultOptions()
//		opts.BindFlags(flag.CommandLine)
//		flag.Parse()
//		ctrl.SetLogger(zap.New())
//		if err := manager.Run(ctrl.SetupSignalHandler(), opts, chatgroup.SetupWithManager); err != nil {
//			ctrl.Log.Error(err, "manager stopped")
//			os.Exit(1)
//		}
//	}
//
// Such a binary replaces the operator's image in the Deployments (same flags,
// same RBAC plus whatever the team's reconciler needs).
//
// Options.Role chooses what a process runs. Installs run the receiver and
// the controllers as two Deployments of the same image, each with its own
// ServiceAccount and role, so that the internet-facing receiver holds only
// what it needs; RoleAll, the default, runs both in one process for
// development (make run).
package manager

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers"
	"github.com/imcallback/friend-deletion-operator/internal/metricsauth"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

// The roles a process can run (Options.Role, --role).
const (
	// RoleAll runs the receiver and the controllers in one process.
	RoleAll = "all"
	// RoleReceiver runs the callback receiver only, on every replica,
	// without leader election.
	RoleReceiver = "receiver"
	// RoleControllers runs the reconcilers only, and the setups given to
	// Run, on the elected leader when leader election is on.
	RoleControllers = "controllers"
)

// Options configures Run. Start from DefaultOptions; BindFlags lets the
// command line override it.
type Options struct {
	// Role is what the process runs: RoleAll, RoleReceiver or
	// RoleControllers.
	Role string
	// WatchNamespaces, a comma-separated list, limits the caches to those
	// namespaces when Manager.Cache.DefaultNamespaces is not set; empty
	// watches every namespace. With a list, Roles in those namespaces are
	// enough.
	WatchNamespaces string
	// Metrics is how the metrics endpoint is served: HTTPS for callers the
	// API server authenticates and authorizes, unless Secure is off. It
	// replaces Manager.Metrics.
	Metrics metricsauth.Options
	// Manager is the controller-runtime manager's options. Run adds the
	// operator's kinds to Manager.Scheme (a new scheme when nil), and its
	// cache settings (controllers.CacheByObject, managed fields stripped)
	// to Manager.Cache, keeping whatever else is set here: tests, for
	// example, limit Cache.DefaultNamespaces to their namespace and set
	// Controller.SkipNameValidation to run several managers in one process.
	Manager ctrl.Options
	// Receiver configures the callback receiver.
	Receiver webhook.Options
	// Controllers configures the FriendDeletion and CallbackConfig
	// reconcilers.
	Controllers controllers.Options
	// Config reaches the cluster. When nil, Run finds it as kubectl does
	// (--kubeconfig, KUBECONFIG, in-cluster, ~/.kube/config).
	Config *rest.Config
}

// DefaultOptions returns the options the operator runs with unless flags
// say otherwise.
func DefaultOptions() Options {
	o := Options{
		Role:        RoleAll,
		Metrics:     metricsauth.DefaultOptions(),
		Receiver:    webhook.DefaultOptions(),
		Controllers: controllers.DefaultOptions(),
	}
	o.Manager.HealthProbeBindAddress = ":8081"
	o.Manager.LeaderElectionID = "friend-deletion-operator.sns.imcallback.io"
	o.Manager.LeaderElectionReleaseOnCancel = true
	return o
}

// BindFlags registers the manager's flags and those of the receiver and the
// controllers, with the options' current values as defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Role, "role", o.Role, "What this process runs: receiver (the callback receiver only, no leader election), "+
		"controllers (the reconcilers only, on the elected leader with --leader-elect) or all (both, for development).")
	fs.StringVar(&o.WatchNamespaces, "watch-namespaces", o.WatchNamespaces, "Comma-separated namespaces whose CallbackConfigs, FriendDeletions, Jobs, ConfigMaps and Secrets "+
		"this process watches; empty watches every namespace. With a list, Roles in those namespaces are enough.")
	o.Metrics.BindFlags(fs)
	fs.StringVar(&o.Manager.HealthProbeBindAddress, "health-probe-bind-address", o.Manager.HealthProbeBindAddress,
		"Address of /healthz and /readyz.")
	fs.StringVar(&o.Manager.PprofBindAddress, "pprof-bind-address", o.Manager.PprofBindAddress,
		"Address of Go's profiling endpoints (/debug/pprof/), plain HTTP without authentication; empty or 0 serves none. For diagnosis: bind it to 127.0.0.1 and port-forward.")
	fs.BoolVar(&o.Manager.LeaderElection, "leader-elect", o.Manager.LeaderElection,
		"Elect a leader among replicas to run the controllers. The receiver runs on every replica; --role=receiver refuses this flag.")
	fs.StringVar(&o.Manager.LeaderElectionNamespace, "leader-election-namespace", o.Manager.LeaderElectionNamespace,
		"Namespace of the leader-election Lease; defaults to the pod's namespace.")
	fs.StringVar(&o.Manager.LeaderElectionID, "leader-election-id", o.Manager.LeaderElectionID,
		"Name of the leader-election Lease.")
	o.Receiver.BindFlags(fs)
	o.Controllers.BindFlags(fs)
}

// Validate reports a combination of options that cannot work.
func (o *Options) Validate() error {
	switch o.Role {
	case RoleAll, RoleControllers:
	case RoleReceiver:
		if o.Manager.LeaderElection {
			return fmt.Errorf("--role=receiver runs no controllers and elects no leader: drop --leader-elect")
		}
	default:
		return fmt.Errorf("--role=%q: want %s", o.Role, strings.Join([]string{RoleAll, RoleReceiver, RoleControllers}, ", "))
	}
	if o.Controllers.ReceiverServiceAccount != "" {
		if _, err := controllers.ParseServiceAccount(o.Controllers.ReceiverServiceAccount); err != nil {
			return fmt.Errorf("--receiver-service-account: %w", err)
		}
	}
	for ns := range namespaces(o.WatchNamespaces) {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("--watch-namespaces: %q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
	}
	return nil
}

// RunsReceiver reports whether the role runs the callback receiver.
func (o *Options) RunsReceiver() bool { return o.Role == RoleAll || o.Role == RoleReceiver }

// RunsControllers reports whether the role runs the reconcilers and the
// setups given to Run.
func (o *Options) RunsControllers() bool { return o.Role == RoleAll || o.Role == RoleControllers }

// namespaces turns --watch-namespaces into the cache's DefaultNamespaces:
// nil, every namespace, when the list is empty.
func namespaces(list string) map[string]cache.Config {
	var m map[string]cache.Config
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			if m == nil {
				m = map[string]cache.Config{}
			}
			m[ns] = cache.Config{}
		}
	}
	return m
}

// Setup adds something to the manager before it starts, typically a
// reconciler built with cleanup.NewControllerManagedBy.
type Setup func(ctrl.Manager) error

// Run runs the operator until ctx is done: as its role says, the callback
// receiver on every replica, the controllers and each of setups on the
// elected leader; and the health endpoints. It returns nil after ctx is done, or the error that
// stopped it.
func Run(ctx context.Context, opts Options, setups ...Setup) error {
	mgr, err := newManager(opts, setups...)
	if err != nil {
		return err
	}
	ctrl.Log.Info("starting manager", "role", opts.Role, "watchNamespaces", opts.WatchNamespaces,
		"metrics", opts.Metrics.BindAddress, "metricsSecure", opts.Metrics.Secure,
		"probes", opts.Manager.HealthProbeBindAddress, "leaderElection", opts.Manager.LeaderElection,
		"gracefulShutdownTimeout", gracefulShutdownTimeout(opts).String())
	return mgr.Start(ctx)
}

// defaultGracefulShutdownTimeout is controller-runtime's default: how long
// the manager waits for its runnables (reconcilers finishing their work)
// once ctx is done.
const defaultGracefulShutdownTimeout = 30 * time.Second

// gracefulShutdownTimeout is how long the manager waits for its runnables
// to stop, unless opts.Manager sets it: with the receiver, its whole
// shutdown (webhook.Options.ShutdownBudget: the delay, the callbacks in
// flight, the spool's drain, the last status write), so that the manager
// does not give up while the receiver still answers or drains, and no less
// than controller-runtime's 30 s when the controllers run too.
func gracefulShutdownTimeout(opts Options) *time.Duration {
	if opts.Manager.GracefulShutdownTimeout != nil {
		return opts.Manager.GracefulShutdownTimeout
	}
	d := defaultGracefulShutdownTimeout
	switch {
	case opts.Role == RoleReceiver:
		d = opts.Receiver.ShutdownBudget()
	case opts.RunsReceiver():
		d = max(d, opts.Receiver.ShutdownBudget())
	}
	return &d
}

// newManager builds the manager Run starts.
func newManager(opts Options, setups ...Setup) (ctrl.Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	mo := opts.Manager
	mo.Metrics = opts.Metrics.ServerOptions()
	mo.GracefulShutdownTimeout = gracefulShutdownTimeout(opts)
	if len(mo.Cache.DefaultNamespaces) == 0 {
		mo.Cache.DefaultNamespaces = namespaces(opts.WatchNamespaces)
	}
	if mo.Scheme == nil {
		mo.Scheme = runtime.NewScheme()
	}
	if err := clientgoscheme.AddToScheme(mo.Scheme); err != nil {
		return nil, err
	}
	if err := snsv1alpha1.AddToScheme(mo.Scheme); err != nil {
		return nil, err
	}
	if mo.Cache.DefaultTransform == nil {
		mo.Cache.DefaultTransform = cache.TransformStripManagedFields()
	}
	byObject := controllers.CacheByObject()
	for obj, bo := range mo.Cache.ByObject {
		byObject[obj] = bo
	}
	mo.Cache.ByObject = byObject

	cfg := opts.Config
	if cfg == nil {
		var err error
		if cfg, err = ctrl.GetConfig(); err != nil {
			return nil, fmt.Errorf("finding the cluster: %w", err)
		}
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	if opts.RunsReceiver() {
		if err := webhook.SetupWithManager(mgr, opts.Receiver); err != nil {
			return nil, fmt.Errorf("setting up the receiver: %w", err)
		}
	}
	if opts.RunsControllers() {
		if err := controllers.SetupWithManager(mgr, opts.Controllers); err != nil {
			return nil, fmt.Errorf("setting up the controllers: %w", err)
		}
		for i, setup := range setups {
			if err := setup(mgr); err != nil {
				return nil, fmt.Errorf("setup %d: %w", i+1, err)
			}
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}
