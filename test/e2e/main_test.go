//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
	"github.com/imcallback/friend-deletion-operator/hack/localcluster/cluster"
)

var (
	// root is the repository's top folder.
	root = testenv.RepoRoot()
	// local is the cluster every test runs against.
	local *cluster.Cluster
	// manager is the operator's process.
	// managers are the receiver's and the controllers' processes.
	managers []*cluster.Process
	// receiverURL is the manager's callback receiver.
	receiverURL string
)

// ctx is the tests' context: the tests bound their waits themselves.
func ctx() context.Context { return context.Background() }

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (code int, err error) {
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	// MANAGER, relative to the repository's top folder, names the binary.
	managerBin := os.Getenv("MANAGER")
	if managerBin == "" {
		managerBin = filepath.Join("bin", "manager")
	}
	if !filepath.IsAbs(managerBin) {
		managerBin = filepath.Join(root, managerBin)
	}
	if _, err := os.Stat(managerBin); err != nil {
		return 1, fmt.Errorf("the manager binary %s is missing: run the tests with `make test-e2e`, which builds it", managerBin)
	}

	dir := filepath.Join(root, "bin", "e2e-cluster")
	local, err = cluster.Start(ctx, cluster.Options{Dir: dir, Out: os.Stdout})
	if err != nil {
		return 1, err
	}
	var stopOnce sync.Once
	var stopErr error
	stopAll := func() error {
		stopOnce.Do(func() {
			for _, m := range managers {
				stopErr = errors.Join(stopErr, m.Stop(15*time.Second))
			}
			stopErr = errors.Join(stopErr, local.Stop())
		})
		return stopErr
	}
	defer func() {
		err = errors.Join(err, stopAll())
		if code != 0 {
			fmt.Printf("logs of the cluster and the manager: %s\n", filepath.Join(dir, "logs"))
		}
	}()
	// Ctrl-C, or the end of -timeout, ends this process without running
	// the deferred stop, and kube-apiserver and etcd would outlive it.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "e2e: interrupted: stopping the manager and the cluster")
			_ = stopAll()
			os.Exit(130)
		case <-finished:
		}
	}()
	if timeout := testTimeout(); timeout > 2*time.Minute {
		alarm := time.AfterFunc(timeout-time.Minute, func() {
			fmt.Fprintln(os.Stderr, "e2e: -timeout is a minute away: stopping the manager and the cluster so that nothing outlives the tests")
			_ = stopAll()
		})
		defer alarm.Stop()
	}

	if err := startManager(ctx, managerBin); err != nil {
		return 1, err
	}
	code = m.Run()
	for _, m := range managers {
		if exited, _ := m.Exited(); exited {
			return 1, fmt.Errorf("%s: %w", m.Name, m.ExitError())
		}
	}
	return code, nil
}

// testTimeout is go test's -timeout, 0 when there is none.
func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	d, _ := f.Value.(flag.Getter).Get().(time.Duration)
	return d
}

// managerAlive fails g when the receiver or the controllers have exited.
func managerAlive(g Gomega) {
	for _, m := range managers {
		if exited, _ := m.Exited(); exited {
			g.ExpectWithOffset(2, m.ExitError()).NotTo(HaveOccurred(), m.Name)
		}
	}
}

// startManager installs the operator from config/default (everything but
// the Deployments: the receiver and the controllers run here as processes of
// bin/manager, each with the identity and RBAC its Deployment would have)
// and starts both.
func startManager(ctx context.Context, bin string) error {
	fmt.Println("installing config/default (without its Deployments) ...")
	rendered, err := kubectl(ctx, nil, "kustomize", filepath.Join(root, "config", "default"))
	if err != nil {
		return fmt.Errorf("rendering config/default (`make manifests` writes config/rbac/role.yaml and the CRDs): %w", err)
	}
	manifests, sas, err := withoutDeployment(rendered)
	if err != nil {
		return err
	}
	if _, err := kubectl(ctx, manifests, "apply", "--server-side", "-f", "-"); err != nil {
		return fmt.Errorf("applying config/default: %w", err)
	}
	if _, err := kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/callbackconfigs.sns.imcallback.io", "crd/frienddeletions.sns.imcallback.io"); err != nil {
		return err
	}

	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = cluster.FreePort(); err != nil {
			return err
		}
	}
	receiverAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	receiverURL = "http://" + receiverAddr
	for _, role := range []struct {
		name, sa string
		args     []string
	}{
		{"receiver", "friend-deletion-operator-receiver", []string{"--receiver-bind-address=" + receiverAddr}},
		// Leader election as deployed, in the operator's namespace, so its
		// Role is exercised too; and the receiver granted its token Secrets
		// as deployed.
		{"controllers", "friend-deletion-operator-controller-manager", []string{"--leader-elect",
			"--receiver-service-account=" + receiverSANamespace(sas) + "/friend-deletion-operator-receiver"}},
	} {
		sa := sas[role.sa]
		if sa == nil {
			return fmt.Errorf("config/default renders no ServiceAccount %s", role.sa)
		}
		token, err := kubectl(ctx, nil, "create", "token", sa.GetName(), "-n", sa.GetNamespace(), "--duration=24h")
		if err != nil {
			return fmt.Errorf("creating a token for ServiceAccount %s: %w", sa.GetName(), err)
		}
		kubeconfig, err := local.WriteTokenKubeconfig(role.name, strings.TrimSpace(string(token)))
		if err != nil {
			return err
		}
		healthAddr := "127.0.0.1:" + strconv.Itoa(ports[len(managers)*2+1])
		args := append([]string{
			"--role=" + role.name,
			"--kubeconfig=" + kubeconfig,
			"--health-probe-bind-address=" + healthAddr,
			"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[len(managers)*2+2]),
			"--leader-election-namespace=" + sa.GetNamespace(),
			"--zap-log-level=debug",
		}, role.args...)
		p := &cluster.Process{
			Name:    role.name,
			Path:    bin,
			Args:    args,
			LogPath: filepath.Join(local.Dir, "logs", role.name+".log"),
		}
		fmt.Printf("starting %s --role=%s as ServiceAccount %s/%s ...\n", bin, role.name, sa.GetNamespace(), sa.GetName())
		if err := p.Start(); err != nil {
			return err
		}
		managers = append(managers, p)
		if err := p.WaitReady(ctx, "http://"+healthAddr+"/readyz"); err != nil {
			return err
		}
	}
	return nil
}

// receiverSANamespace is the namespace of the receiver's ServiceAccount.
func receiverSANamespace(sas map[string]*unstructured.Unstructured) string {
	if sa := sas["friend-deletion-operator-receiver"]; sa != nil {
		return sa.GetNamespace()
	}
	return ""
}

// withoutDeployment drops the Deployments from a multi-document YAML stream
// and returns the rest, and the ServiceAccounts it holds by name.
func withoutDeployment(manifests []byte) ([]byte, map[string]*unstructured.Unstructured, error) {
	var out bytes.Buffer
	sas := map[string]*unstructured.Unstructured{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			return nil, nil, err
		}
		switch obj.GetKind() {
		case "":
			continue
		case "Deployment":
			continue
		case "ServiceAccount":
			sas[obj.GetName()] = obj.DeepCopy()
		}
		out.WriteString("---\n")
		out.Write(doc)
	}
	return out.Bytes(), sas, nil
}

// kubectl runs the cluster's kubectl as the admin, with stdin when given,
// and returns its standard output.
func kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := local.Kubectl(ctx, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return out, err
	}
	return out, nil
}
