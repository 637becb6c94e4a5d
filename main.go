// Command manager runs the friend-deletion-operator: the callback receiver,
// which turns Tencent Cloud IM Sns.CallbackFriendDelete callbacks into
// FriendDeletion objects on every replica, and the controllers, which run each
// FriendDeletion's cleanup steps on the elected leader.
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

// options holds the manager's own flags; the receiver and the controllers
// bind theirs.
type options struct {
	metricsAddr       string
	probeAddr         string
	leaderElect       bool
	leaderElectionNS  string
	leaderElectionID  string
	enableExampleStep bool
	receiver          webhook.Options
	controllers       controllers.Options
	zap               zap.Options
}

func (o *options) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":9090", "Address of the Prometheus metrics endpoint; 0 turns it off.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader among replicas to run the controllers. The receiver runs on every replica.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election Lease; defaults to the pod's namespace.")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", "friend-deletion-operator.sns.imcallback.io", "Name of the leader-election Lease.")
	fs.BoolVar(&o.enableExampleStep, "enable-example-reconciler", false, "Run the worked example of a custom cleanup-step reconciler.")
	o.receiver.BindFlags(fs)
	o.controllers.BindFlags(fs)
	o.zap.BindFlags(fs)
}

func main() {
	opts := options{
		receiver:    webhook.DefaultOptions(),
		controllers: controllers.DefaultOptions(),
		zap:         zap.Options{},
	}
	opts.bindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts.zap)))

	if err := run(opts); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

func run(opts options) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := snsv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("finding the cluster: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: opts.metricsAddr},
		HealthProbeBindAddress:        opts.probeAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionNamespace:       opts.leaderElectionNS,
		LeaderElectionID:              opts.leaderElectionID,
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         controllers.CacheByObject(),
		},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	if err := webhook.SetupWithManager(mgr, opts.receiver); err != nil {
		return fmt.Errorf("setting up the receiver: %w", err)
	}
	if err := controllers.SetupWithManager(mgr, opts.controllers); err != nil {
		return fmt.Errorf("setting up the controllers: %w", err)
	}
	if opts.enableExampleStep {
		if err := controllers.SetupExampleReconciler(mgr); err != nil {
			return fmt.Errorf("setting up the example reconciler: %w", err)
		}
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	ctrl.Log.Info("starting manager", "metrics", opts.metricsAddr, "probes", opts.probeAddr, "leaderElection", opts.leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}
