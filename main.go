// Command manager runs the friend-deletion-operator: the callback receiver,
// which turns Tencent Cloud IM Sns.CallbackFriendDelete callbacks into
// FriendDeletion objects on every replica, and the controllers, which run each
// FriendDeletion's cleanup steps on the elected leader.
//
// --role chooses which of the two a process runs. Installs run them as two
// Deployments of the same image, each with its own ServiceAccount and role,
// so that the internet-facing receiver holds only what it needs; --role=all,
// the default, runs both in one process for development (`make run`).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/controllers"
	"github.com/imcallback/friend-deletion-operator/internal/metricsauth"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

// The roles a process can run (--role).
const (
	roleAll         = "all"
	roleReceiver    = "receiver"
	roleControllers = "controllers"
)

// options holds the manager's own flags; the receiver and the controllers
// bind theirs.
type options struct {
	role              string
	watchNamespaces   string
	metrics           metricsauth.Options
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
	fs.StringVar(&o.role, "role", roleAll, "What this process runs: receiver (the callback receiver only, no leader election), "+
		"controllers (the reconcilers only, on the elected leader with --leader-elect) or all (both, for development).")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces whose CallbackConfigs, FriendDeletions, Jobs, ConfigMaps and Secrets "+
		"this process watches; empty watches every namespace. With a list, Roles in those namespaces are enough.")
	o.metrics.BindFlags(fs)
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader among replicas to run the controllers. The receiver runs on every replica; --role=receiver refuses this flag.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election Lease; defaults to the pod's namespace.")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", "friend-deletion-operator.sns.imcallback.io", "Name of the leader-election Lease.")
	fs.BoolVar(&o.enableExampleStep, "enable-example-reconciler", false, "Run the worked example of a custom cleanup-step reconciler.")
	o.receiver.BindFlags(fs)
	o.controllers.BindFlags(fs)
	o.zap.BindFlags(fs)
}

func main() {
	opts := options{
		metrics:     metricsauth.DefaultOptions(),
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

// validate reports a flag combination that cannot work.
func (o *options) validate() error {
	switch o.role {
	case roleAll, roleControllers:
	case roleReceiver:
		if o.leaderElect {
			return fmt.Errorf("--role=receiver runs no controllers and elects no leader: drop --leader-elect")
		}
		if o.enableExampleStep {
			return fmt.Errorf("--enable-example-reconciler needs --role=controllers or all")
		}
	default:
		return fmt.Errorf("--role=%q: want %s", o.role, strings.Join([]string{roleAll, roleReceiver, roleControllers}, ", "))
	}
	for ns := range namespaces(o.watchNamespaces) {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("--watch-namespaces: %q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
	}
	return nil
}

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

func (o *options) runsReceiver() bool    { return o.role == roleAll || o.role == roleReceiver }
func (o *options) runsControllers() bool { return o.role == roleAll || o.role == roleControllers }

func run(opts options) error {
	if err := opts.validate(); err != nil {
		return err
	}
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
		Metrics:                       opts.metrics.ServerOptions(),
		HealthProbeBindAddress:        opts.probeAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionNamespace:       opts.leaderElectionNS,
		LeaderElectionID:              opts.leaderElectionID,
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			DefaultTransform:  cache.TransformStripManagedFields(),
			ByObject:          controllers.CacheByObject(),
			DefaultNamespaces: namespaces(opts.watchNamespaces),
		},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	if opts.runsReceiver() {
		if err := webhook.SetupWithManager(mgr, opts.receiver); err != nil {
			return fmt.Errorf("setting up the receiver: %w", err)
		}
	}
	if opts.runsControllers() {
		if err := controllers.SetupWithManager(mgr, opts.controllers); err != nil {
			return fmt.Errorf("setting up the controllers: %w", err)
		}
		if opts.enableExampleStep {
			if err := controllers.SetupExampleReconciler(mgr); err != nil {
				return fmt.Errorf("setting up the example reconciler: %w", err)
			}
		}
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	ctrl.Log.Info("starting manager", "role", opts.role, "watchNamespaces", opts.watchNamespaces, "metrics", opts.metrics.BindAddress, "metricsSecure", opts.metrics.Secure, "probes", opts.probeAddr, "leaderElection", opts.leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}
