package manager

import (
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// TestOptions returns DefaultOptions made to run in a test process against
// cfg, such as the control plane of controllers/testenv: the cache sees only
// the given namespaces (a test's own), the metrics and probe endpoints are
// off, the receiver listens on a free port of 127.0.0.1, several managers
// may run in one process one after another, and failed reconciles and http
// steps are retried within a second.
func TestOptions(cfg *rest.Config, namespaces ...string) Options {
	o := DefaultOptions()
	o.Config = cfg
	o.Metrics.BindAddress = "0"
	o.Metrics.Secure = false
	o.Manager.HealthProbeBindAddress = "0"
	o.Manager.Controller.SkipNameValidation = ptr.To(true)
	if len(namespaces) > 0 {
		o.Manager.Cache.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.Manager.Cache.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	o.Receiver.BindAddress = "127.0.0.1:0"
	o.Controllers.FriendDeletionConcurrency = 4
	o.Controllers.RetryBaseDelay = 10 * time.Millisecond
	o.Controllers.RetryMaxDelay = time.Second
	o.Controllers.HTTPBackoffBase = 20 * time.Millisecond
	o.Controllers.HTTPBackoffMax = 100 * time.Millisecond
	return o
}
