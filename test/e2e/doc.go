// Package e2e holds the end-to-end tests: a local cluster with the real
// kube-controller-manager, kube-scheduler and kwok (hack/localcluster), the
// operator installed from config/ and running as its own process (the real
// bin/manager) with the RBAC a user installs, real callbacks over HTTP, and
// assertions made with kubectl, as a user would.
//
// The tests carry the e2e build tag, so `go test ./...` skips them. Run them
// with
//
//	make test-e2e
//
// which builds the control-plane binaries and bin/manager first. By hand:
//
//	K8S_ASSETS=<binaries> MANAGER=bin/manager go test -tags e2e -v ./test/e2e/
//
// Logs of every component, the manager's included, stay in bin/e2e-cluster/logs.
package e2e
