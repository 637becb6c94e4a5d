package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
	"github.com/imcallback/friend-deletion-operator/hack/localcluster/cluster"
)

// runFlags configure `localcluster run`.
type runFlags struct {
	clusterFlags
	manager      string
	crds         string
	samples      string
	receiverAddr string
	healthAddr   string
	metricsAddr  string
	local        bool
	managerArgs  []string
}

// runOperator is `make run`: the manager against the current kubeconfig
// context when one is reachable, otherwise against a local cluster that it
// starts, with the CRDs and the sample CallbackConfig installed.
func runOperator(ctx context.Context, args []string) error {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f.bind(fs)
	fs.StringVar(&f.manager, "manager", "bin/manager", "the manager binary")
	fs.StringVar(&f.crds, "crds", "config/crd/bases", "folder of the CRDs to install")
	fs.StringVar(&f.samples, "samples", "config/samples/local", "folder of the manifests applied to a local cluster (a CallbackConfig and its token Secret)")
	fs.StringVar(&f.receiverAddr, "receiver-bind-address", "127.0.0.1:8080", "the manager's callback receiver address")
	fs.StringVar(&f.healthAddr, "health-probe-bind-address", "127.0.0.1:8081", "the manager's /healthz and /readyz address")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", "127.0.0.1:9090", "the manager's metrics address")
	fs.BoolVar(&f.local, "local", false, "start a local cluster even when the current kubeconfig context is reachable")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: localcluster run [flags] [-- manager flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.managerArgs = fs.Args()
	if _, err := os.Stat(f.manager); err != nil {
		return fmt.Errorf("the manager binary %s is missing: run `make build`", f.manager)
	}
	for _, a := range []struct{ what, addr string }{
		{"the manager's callback receiver (--receiver-bind-address)", f.receiverAddr},
		{"the manager's health probes (--health-probe-bind-address)", f.healthAddr},
		{"the manager's metrics (--metrics-bind-address, plain HTTP)", f.metricsAddr},
	} {
		if err := cluster.CheckAddrFree(a.what, a.addr); err != nil {
			return err
		}
	}

	if !f.local {
		current, err := reachableContext(ctx)
		if err == nil {
			return runAgainstCurrentContext(ctx, &f, current)
		}
		fmt.Printf("no reachable cluster in the current kubeconfig context (%v): starting a local cluster in %s\n", err, f.dir)
	}
	return runLocal(ctx, &f)
}

// reachableContext returns a description of the current kubeconfig context
// when its API server answers, and why not otherwise.
func reachableContext(ctx context.Context) (string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	raw, err := loader.RawConfig()
	if err != nil {
		return "", err
	}
	if raw.CurrentContext == "" {
		return "", errors.New("no current context")
	}
	cfg, err := loader.ClientConfig()
	if err != nil {
		return "", err
	}
	cfg.Timeout = 5 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", err
	}
	if _, err := dc.ServerVersion(); err != nil {
		return "", fmt.Errorf("context %q at %s: %w", raw.CurrentContext, cfg.Host, err)
	}
	return fmt.Sprintf("%q at %s", raw.CurrentContext, cfg.Host), nil
}

func runAgainstCurrentContext(ctx context.Context, f *runFlags, current string) error {
	fmt.Printf("current kubeconfig context %s is reachable: running the manager against it (--local starts a local cluster instead)\n", current)
	kubectl := filepath.Join(f.assets, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		kubectl = "kubectl"
	}
	if err := installCRDs(ctx, f.crds, kubectl); err != nil {
		return err
	}
	mgr, err := startManager(ctx, f, "")
	if err != nil {
		return err
	}
	fmt.Printf("\nThe operator is running; its callback receiver listens on http://%s/callbacks/<namespace>/<callbackconfig>.\nCtrl-C stops it.\n\n", f.receiverAddr)
	return waitAndStop(ctx, mgr, nil)
}

func runLocal(ctx context.Context, f *runFlags) (retErr error) {
	c, err := cluster.Start(ctx, f.options())
	if err != nil {
		return err
	}
	var mgr *cluster.Process
	defer func() {
		if retErr != nil {
			if mgr != nil {
				_ = mgr.Stop(15 * time.Second)
			}
			_ = stopCluster(c)
		}
	}()

	if err := installCRDs(ctx, f.crds, c.KubectlPath(), "--kubeconfig="+c.KubeconfigPath); err != nil {
		return err
	}
	fmt.Printf("applying %s ...\n", f.samples)
	if err := runCommand(ctx, c.KubectlPath(), "--kubeconfig="+c.KubeconfigPath, "apply", "-f", f.samples); err != nil {
		return err
	}
	if mgr, err = startManager(ctx, f, c.KubeconfigPath); err != nil {
		return err
	}
	if err := printLocalUsage(ctx, c, f); err != nil {
		return err
	}
	return waitAndStop(ctx, mgr, c)
}

// installCRDs applies the CRDs and waits until the API server serves them:
// the manager refuses to start before.
func installCRDs(ctx context.Context, crds, kubectl string, kubectlArgs ...string) error {
	fmt.Printf("installing the CRDs from %s ...\n", crds)
	apply := append(append([]string{}, kubectlArgs...), "apply", "--server-side", "-f", crds)
	if err := runCommand(ctx, kubectl, apply...); err != nil {
		return err
	}
	wait := append(append([]string{}, kubectlArgs...), "wait", "--for=condition=Established", "--timeout=60s", "-f", crds)
	return runCommand(ctx, kubectl, wait...)
}

// startManager starts the manager with its output on the terminal and
// waits for its /readyz.
func startManager(ctx context.Context, f *runFlags, kubeconfig string) (*cluster.Process, error) {
	args := []string{
		"--receiver-bind-address=" + f.receiverAddr,
		"--health-probe-bind-address=" + f.healthAddr,
		"--metrics-bind-address=" + f.metricsAddr,
		// Plain HTTP for development: curl it without a token. Installs
		// serve metrics over HTTPS to authorized scrapers only.
		"--metrics-secure=false",
	}
	if kubeconfig != "" {
		args = append(args, "--kubeconfig="+kubeconfig)
	}
	args = append(args, f.managerArgs...)
	mgr := &cluster.Process{Name: "manager", Path: f.manager, Args: args, Stdout: os.Stdout, Stderr: os.Stderr}
	fmt.Printf("starting the manager: %s %s\n", f.manager, strings.Join(args, " "))
	if err := mgr.Start(); err != nil {
		return nil, err
	}
	if err := mgr.WaitReady(ctx, "http://"+loopback(f.healthAddr)+"/readyz"); err != nil {
		_ = mgr.Stop(15 * time.Second)
		return nil, err
	}
	return mgr, nil
}

// waitAndStop waits for Ctrl-C or for the manager to exit, then stops the
// manager and the cluster (when there is one).
func waitAndStop(ctx context.Context, mgr *cluster.Process, c *cluster.Cluster) error {
	var exited error
	select {
	case <-ctx.Done():
		fmt.Println("\nstopping the manager ...")
	case <-mgr.Done():
		exited = mgr.ExitError()
	}
	errs := []error{exited, mgr.Stop(15 * time.Second)}
	if c != nil {
		errs = append(errs, stopCluster(c))
	}
	return errors.Join(errs...)
}

// printLocalUsage prints how to send a signed callback to the sample
// CallbackConfig and how to watch what it does.
func printLocalUsage(ctx context.Context, c *cluster.Cluster, f *runFlags) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := snsv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	cl, err := client.New(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	var configs snsv1alpha1.CallbackConfigList
	if err := cl.List(ctx, &configs); err != nil {
		return err
	}
	if len(configs.Items) == 0 {
		return fmt.Errorf("%s holds no CallbackConfig", f.samples)
	}
	cc := configs.Items[0]
	token := ""
	if cc.Spec.Auth != nil {
		var secret corev1.Secret
		ref := cc.Spec.Auth.TokenSecretRef
		if err := cl.Get(ctx, client.ObjectKey{Namespace: cc.Namespace, Name: ref.Name}, &secret); err != nil {
			return fmt.Errorf("reading the sample's token Secret: %w", err)
		}
		token = string(secret.Data[ref.Key])
	}
	receiver := "http://" + loopback(f.receiverAddr)
	kubectl := fmt.Sprintf("KUBECONFIG=%s %s", c.KubeconfigPath, c.KubectlPath())
	ns := ""
	if cc.Namespace != "default" {
		ns = " -n " + cc.Namespace
	}
	fmt.Printf(`
The operator runs against the local cluster.

  Receiver (CallbackConfig %s/%s):
    %s/callbacks/%s/%s

  Send a signed Sns.CallbackFriendDelete callback (paste into another terminal):
%s

  Watch what it does:
    %s get frienddeletions%s
    %s get jobs,pods%s -o wide

Ctrl-C stops the operator and the cluster.

`, cc.Namespace, cc.Name, receiver, cc.Namespace, cc.Name,
		curlCommand(receiver, cc.Namespace, cc.Name, cc.Spec.SDKAppID, token, cc.Spec.Auth != nil),
		kubectl, ns, kubectl, ns)
	return nil
}

// curlCommand is a shell command that sends one signed callback. RequestTime
// and Sign are computed when it runs, so it works whenever it is pasted.
func curlCommand(receiver, namespace, name, sdkAppID, token string, auth bool) string {
	query := "SdkAppid=" + sdkAppID + "&CallbackCommand=Sns.CallbackFriendDelete&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
	var b strings.Builder
	if auth {
		fmt.Fprintf(&b, "    T=$(date +%%s); S=$(printf '%%s%%s' %s \"$T\" | sha256sum | cut -d' ' -f1); \\\n", shellQuote(token))
		query += "&RequestTime=$T&Sign=$S"
	}
	fmt.Fprintf(&b, "    curl -sS -X POST -H 'Content-Type: application/json' \\\n")
	fmt.Fprintf(&b, "      \"%s/callbacks/%s/%s?%s\" \\\n", receiver, namespace, name, query)
	fmt.Fprintf(&b, "      -d '{\"CallbackCommand\":\"Sns.CallbackFriendDelete\",\"PairList\":[{\"From_Account\":\"alice\",\"To_Account\":\"bob\"}]}'; echo")
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// loopback turns a listen address such as ":8080" into one to connect to.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// runCommand runs a command with its output on the terminal.
func runCommand(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return nil
}
