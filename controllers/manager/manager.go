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
// Such a binary replaces the operator's image in the Deployment (same flags,
// same RBAC plus whatever the team's reconciler needs).
package manager

import (
	"context"
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

// Options configures Run. Start from DefaultOptions; BindFlags lets the
// command line override it.
type Options struct {
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
		Receiver:    webhook.DefaultOptions(),
		Controllers: controllers.DefaultOptions(),
	}
	o.Manager.Metrics.BindAddress = ":9090"
	o.Manager.HealthProbeBindAddress = ":8081"
	o.Manager.LeaderElectionID = "friend-deletion-operator.sns.imcallback.io"
	o.Manager.LeaderElectionReleaseOnCancel = true
	return o
}

// BindFlags registers the manager's flags and those of the receiver and the
// controllers, with the options' current values as defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Manager.Metrics.BindAddress, "metrics-bind-address", o.Manager.Metrics.BindAddress,
		"Address of the Prometheus metrics endpoint; 0 turns it off.")
	fs.StringVar(&o.Manager.HealthProbeBindAddress, "health-probe-bind-address", o.Manager.HealthProbeBindAddress,
		"Address of /healthz and /readyz.")
	fs.BoolVar(&o.Manager.LeaderElection, "leader-elect", o.Manager.LeaderElection,
		"Elect a leader among replicas to run the controllers. The receiver runs on every replica.")
	fs.StringVar(&o.Manager.LeaderElectionNamespace, "leader-election-namespace", o.Manager.LeaderElectionNamespace,
		"Namespace of the leader-election Lease; defaults to the pod's namespace.")
	fs.StringVar(&o.Manager.LeaderElectionID, "leader-election-id", o.Manager.LeaderElectionID,
		"Name of the leader-election Lease.")
	o.Receiver.BindFlags(fs)
	o.Controllers.BindFlags(fs)
}

// Setup adds something to the manager before it starts, typically a
// reconciler built with cleanup.NewControllerManagedBy.
type Setup func(ctrl.Manager) error

// Run runs the operator until ctx is done: the callback receiver on every
// replica, the controllers on the elected leader, each of setups, and the
// health endpoints. It returns nil after ctx is done, or the error that
// stopped it.
func Run(ctx context.Context, opts Options, setups ...Setup) error {
	mgr, err := newManager(opts, setups...)
	if err != nil {
		return err
	}
	ctrl.Log.Info("starting manager", "metrics", opts.Manager.Metrics.BindAddress,
		"probes", opts.Manager.HealthProbeBindAddress, "leaderElection", opts.Manager.LeaderElection)
	return mgr.Start(ctx)
}

// newManager builds the manager Run starts.
func newManager(opts Options, setups ...Setup) (ctrl.Manager, error) {
	mo := opts.Manager
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
	if err := webhook.SetupWithManager(mgr, opts.Receiver); err != nil {
		return nil, fmt.Errorf("setting up the receiver: %w", err)
	}
	if err := controllers.SetupWithManager(mgr, opts.Controllers); err != nil {
		return nil, fmt.Errorf("setting up the controllers: %w", err)
	}
	for i, setup := range setups {
		if err := setup(mgr); err != nil {
			return nil, fmt.Errorf("setup %d: %w", i+1, err)
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
