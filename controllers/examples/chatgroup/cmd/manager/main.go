// Command manager is the operator with the chat-group step added: the
// binary a team builds from its own module instead of forking the
// operator's main.go. It takes every flag of the operator's manager.
package main

import (
	"flag"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/imcallback/friend-deletion-operator/controllers/examples/chatgroup"
	"github.com/imcallback/friend-deletion-operator/controllers/manager"
)

func main() {
	opts := manager.DefaultOptions()
	opts.BindFlags(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := manager.Run(ctrl.SetupSignalHandler(), opts, chatgroup.SetupWithManager); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}
