package webhook

import (
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// PathPrefix starts every callback URL path: /callbacks/<namespace>/<name>
// selects the CallbackConfig <name> in <namespace>.
const PathPrefix = "/callbacks/"

// Path returns the URL path that selects the CallbackConfig ns/name.
func Path(ns, name string) string { return PathPrefix + ns + "/" + name }

// route returns the CallbackConfig a URL path selects. The path must be
// exactly /callbacks/<namespace>/<name> with a valid namespace and name.
func route(path string) (types.NamespacedName, bool) {
	rest, ok := strings.CutPrefix(path, PathPrefix)
	if !ok {
		return types.NamespacedName{}, false
	}
	ns, name, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(name, "/") {
		return types.NamespacedName{}, false
	}
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}
