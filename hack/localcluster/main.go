// Command localcluster runs a local Kubernetes cluster (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok with one fake node) from
// the binaries `make control-plane` builds, and `make run` on top of it.
//
//	localcluster up         start the cluster and keep it running until Ctrl-C
//	localcluster run        what `make run` does: run the manager against the
//	                        current kubeconfig context when it is reachable,
//	                        otherwise against a local cluster with the CRDs
//	                        and a sample CallbackConfig installed
//	localcluster reachable  exit 0 when the current kubeconfig context's API
//	                        server answers, 1 otherwise
//
// Every process it starts is stopped on Ctrl-C (SIGINT) or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/imcallback/friend-deletion-operator/hack/localcluster/cluster"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "up"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "up":
		return up(ctx, args)
	case "run":
		return runOperator(ctx, args)
	case "reachable":
		current, err := reachableContext(ctx)
		if err != nil {
			return err
		}
		fmt.Println(current)
		return nil
	default:
		return fmt.Errorf("unknown command %q: want up, run or reachable", cmd)
	}
}

// clusterFlags are the flags both commands take.
type clusterFlags struct {
	dir           string
	assets        string
	apiServerPort int
}

func (f *clusterFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "dir", "bin/local-cluster", "the cluster's folder: kubeconfig, logs, etcd data")
	fs.StringVar(&f.assets, "assets", os.Getenv("K8S_ASSETS"), "folder of the control-plane binaries (default $K8S_ASSETS)")
	fs.IntVar(&f.apiServerPort, "apiserver-port", 0, "kube-apiserver port on 127.0.0.1 (0 picks a free one)")
}

func (f *clusterFlags) options() cluster.Options {
	return cluster.Options{AssetsDir: f.assets, Dir: f.dir, APIServerPort: f.apiServerPort, Out: os.Stdout}
}

func up(ctx context.Context, args []string) error {
	var cf clusterFlags
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	cf.bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cf.options())
	if err != nil {
		return err
	}
	fmt.Printf("\n  export KUBECONFIG=%s\n  %s get nodes\n\nCtrl-C stops the cluster.\n", c.KubeconfigPath, c.KubectlPath())
	<-ctx.Done()
	return stopCluster(c)
}

func stopCluster(c *cluster.Cluster) error {
	fmt.Println("\nstopping the local cluster ...")
	if err := c.Stop(); err != nil {
		return fmt.Errorf("stopping the local cluster: %w", err)
	}
	fmt.Println("stopped; logs are in", c.Dir+"/logs")
	return nil
}
