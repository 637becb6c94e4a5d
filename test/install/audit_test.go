package install

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
)

// access is one kind of request: a verb on a resource (with its
// subresource, as "frienddeletions/status") of an API group.
type access struct {
	verb, group, resource string
}

func (a access) String() string {
	group := a.group
	if group == "" {
		group = "core"
	}
	return a.verb + " " + group + "/" + a.resource
}

// grantedBy lists every access the rules grant, one per verb, group and
// resource.
func grantedBy(rules ...[]rbacv1.PolicyRule) []access {
	var out []access
	for _, rs := range rules {
		for _, r := range rs {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out = append(out, access{verb: v, group: g, resource: res})
					}
				}
			}
		}
	}
	return out
}

// audited is what one identity asked the API server for, from its audit
// log: the requests it was allowed, counted by access, and those it was
// refused.
type audited struct {
	allowed map[access]int
	refused []string
}

// auditedRequests reads the audit log for the requests user (a
// ServiceAccount's user name) made, directly or impersonated, from since
// on. A watch is logged when it starts and again when it ends; each
// request counts once.
func auditedRequests(t *testing.T, user string, since time.Time) audited {
	t.Helper()
	return auditedRequestsIn(t, auditLog, user, since)
}

// auditedRequestsIn is auditedRequests on the audit log at path.
func auditedRequestsIn(t *testing.T, path, user string, since time.Time) audited {
	t.Helper()
	events, err := testenv.ReadAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	got := audited{allowed: map[access]int{}}
	seen := map[string]bool{}
	for _, ev := range events {
		if ev.StageTimestamp.Time.Before(since) || seen[string(ev.AuditID)] || requester(ev) != user {
			continue
		}
		seen[string(ev.AuditID)] = true
		what := ev.Verb + " " + ev.RequestURI
		if ev.ResponseStatus != nil && (ev.ResponseStatus.Code == http.StatusForbidden || ev.ResponseStatus.Code == http.StatusUnauthorized) {
			got.refused = append(got.refused, fmt.Sprintf("%s: %d %s", what, ev.ResponseStatus.Code, ev.ResponseStatus.Message))
			continue
		}
		if ev.Annotations["authorization.k8s.io/decision"] == "forbid" {
			got.refused = append(got.refused, what+": forbidden")
			continue
		}
		if ev.ObjectRef == nil {
			continue // discovery and other non-resource paths
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		got.allowed[access{verb: ev.Verb, group: ev.ObjectRef.APIGroup, resource: res}]++
	}
	return got
}

// requester is the user a request was authorized as: the impersonated one
// when there is one.
func requester(ev auditv1.Event) string {
	if ev.ImpersonatedUser != nil {
		return ev.ImpersonatedUser.Username
	}
	return ev.User.Username
}

// notRequested are, per identity, granted accesses the code needs but
// that no request in the scenario shows, with why. Each is reviewed; an
// access the code does not need is removed from its marker or role
// instead of listed here.
var notRequested = map[string]map[access]string{
	"controllers": {
		{verb: "update", group: "sns.imcallback.io", resource: "frienddeletions/finalizers"}: "not a request: the OwnerReferencesPermissionEnforcement admission plugin checks it when a Job or ConfigMap is created with a blocking owner reference to its FriendDeletion (the suite runs with the plugin on, so the creations above prove it granted)",
		{verb: "get", group: "sns.imcallback.io", resource: "frienddeletions"}:               "the http step reads the FriendDeletion from the API server only after its status patch was refused as a conflict (409), which needs another writer in between",
		{verb: "patch", group: "events.k8s.io", resource: "events"}:                          "client-go's event recorder patches an Event's series when the same event (type, reason, action, object at the same resourceVersion) is recorded again within 6 minutes; the controllers record an Event per condition change after its status write, so a repeat needs two writers of the same change",
	},
	"receiver": {
		{verb: "get", group: "sns.imcallback.io", resource: "callbackconfigs"}: "the status flusher reads the config from the API server only after its counters' patch was refused as a conflict (409), which needs another writer in between",
	},
}

// expectBothWays fails the test unless the identity's audited requests
// were all allowed and, when the scenario ran through (ranThrough), used
// every access its roles grant, but for those notRequested lists.
func expectBothWays(t *testing.T, who string, got audited, ranThrough bool, granted []access) {
	t.Helper()
	if len(got.refused) > 0 {
		t.Errorf("the %s was refused %d requests (a permission the code needs is missing):\n%s", who, len(got.refused), strings.Join(got.refused, "\n"))
	}
	if !ranThrough {
		return
	}
	var unused []string
	for _, a := range granted {
		if got.allowed[a] > 0 {
			continue
		}
		if why, ok := notRequested[who][a]; ok {
			t.Logf("the %s's %s is not requested: %s", who, a, why)
			continue
		}
		unused = append(unused, a.String())
	}
	if len(unused) > 0 {
		t.Errorf("the %s's roles grant what it never asked for (remove it from the role or its marker, or say in notRequested why the scenario cannot reach it): %s", who, strings.Join(unused, ", "))
	}
	var used []string
	for a, n := range got.allowed {
		used = append(used, fmt.Sprintf("%s ×%d", a, n))
	}
	sort.Strings(used)
	t.Logf("the %s's allowed requests: %s", who, strings.Join(used, ", "))
}

// TestAccessesOfRules holds grantedBy to one access per verb, group and
// resource of each rule.
func TestAccessesOfRules(t *testing.T) {
	got := grantedBy([]rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"sns.imcallback.io"}, Resources: []string{"frienddeletions/status"}, Verbs: []string{"patch"}},
	})
	want := []access{
		{"get", "", "configmaps"}, {"list", "", "configmaps"}, {"get", "", "secrets"}, {"list", "", "secrets"},
		{"patch", "sns.imcallback.io", "frienddeletions/status"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("grantedBy = %v, want %v", got, want)
	}
}

// TestAuditedRequests reads a written audit log: one count per request
// (a watch's two stages are one), the impersonated user's requests and
// none of the administrator's own or older ones, subresources apart,
// refusals listed rather than counted, non-resource paths left out.
func TestAuditedRequests(t *testing.T) {
	const sa = "system:serviceaccount:ops:controllers"
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) metav1.MicroTime { return metav1.NewMicroTime(start.Add(d)) }
	as := &authnv1.UserInfo{Username: sa}
	admin := authnv1.UserInfo{Username: "admin"}
	ok, forbidden := &metav1.Status{Code: 200}, &metav1.Status{Code: 403, Message: "no"}
	ref := func(group, resource, sub string) *auditv1.ObjectReference {
		return &auditv1.ObjectReference{APIGroup: group, Resource: resource, Subresource: sub}
	}
	events := []auditv1.Event{
		{AuditID: "old", Stage: auditv1.StageResponseComplete, StageTimestamp: at(-time.Second), User: admin, ImpersonatedUser: as, Verb: "delete", ObjectRef: ref("", "secrets", ""), ResponseStatus: ok},
		{AuditID: "w", Stage: auditv1.StageResponseStarted, StageTimestamp: at(time.Second), User: admin, ImpersonatedUser: as, Verb: "watch", ObjectRef: ref("", "secrets", ""), ResponseStatus: ok},
		{AuditID: "w", Stage: auditv1.StageResponseComplete, StageTimestamp: at(2 * time.Second), User: admin, ImpersonatedUser: as, Verb: "watch", ObjectRef: ref("", "secrets", ""), ResponseStatus: ok},
		{AuditID: "p1", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: admin, ImpersonatedUser: as, Verb: "patch", ObjectRef: ref("sns.imcallback.io", "frienddeletions", "status"), ResponseStatus: ok},
		{AuditID: "p2", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: admin, ImpersonatedUser: as, Verb: "patch", ObjectRef: ref("sns.imcallback.io", "frienddeletions", "status"), ResponseStatus: &metav1.Status{Code: 409}},
		{AuditID: "g", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: authnv1.UserInfo{Username: sa}, Verb: "get", ObjectRef: ref("", "configmaps", ""), ResponseStatus: &metav1.Status{Code: 404}},
		{AuditID: "mine", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: admin, Verb: "create", ObjectRef: ref("", "secrets", ""), ResponseStatus: ok},
		{AuditID: "other", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: admin, ImpersonatedUser: &authnv1.UserInfo{Username: "system:serviceaccount:ops:receiver"}, Verb: "list", ObjectRef: ref("", "secrets", ""), ResponseStatus: ok},
		{AuditID: "no", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: admin, ImpersonatedUser: as, Verb: "create", RequestURI: "/api/v1/namespaces/ops/events", ObjectRef: ref("", "events", ""), ResponseStatus: forbidden},
		{AuditID: "api", Stage: auditv1.StageResponseComplete, StageTimestamp: at(time.Second), User: admin, ImpersonatedUser: as, Verb: "get", RequestURI: "/api", ResponseStatus: ok},
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	var lines []byte
	for _, ev := range events {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, b...), '\n')
	}
	if err := os.WriteFile(path, lines, 0o600); err != nil {
		t.Fatal(err)
	}

	got := auditedRequestsIn(t, path, sa, start)
	want := map[access]int{
		{"watch", "", "secrets"}:                                 1,
		{"patch", "sns.imcallback.io", "frienddeletions/status"}: 2,
		{"get", "", "configmaps"}:                                1,
	}
	if !maps.Equal(got.allowed, want) {
		t.Errorf("allowed = %v, want %v", got.allowed, want)
	}
	if len(got.refused) != 1 || !strings.HasPrefix(got.refused[0], "create /api/v1/namespaces/ops/events: 403") {
		t.Errorf("refused = %q, want the events create", got.refused)
	}
}
