package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/imcallback/friend-deletion-operator/controllers/manager"
	"github.com/imcallback/friend-deletion-operator/controllers/testenv"
	"github.com/imcallback/friend-deletion-operator/webhook"
)

const dashboardFile = chartDir + "/files/grafana-dashboard.json"

// metricName matches the names of the operator's metrics and the
// controller-runtime metrics the dashboard and alerts use.
var metricName = regexp.MustCompile(`\b(?:friend_deletion_|controller_runtime_|workqueue_)[a-z0-9_]+`)

// dashboardExprs returns every query of the Grafana dashboard, panels and
// template variables.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	var dash any
	if err := json.Unmarshal(readFile(t, dashboardFile), &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if s, ok := child.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(dash)
	return exprs
}

// ruleExprs returns the expressions of the chart's PrometheusRule.
func ruleExprs(t *testing.T) []string {
	t.Helper()
	objs := decode(t, mustHelmTemplate(t, "ops", "--set", "metrics.prometheusRule.enabled=true"))
	rules := objs.ofKind("PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules rendered, want 1", len(rules))
	}
	groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	var exprs []string
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rs {
			expr, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
			exprs = append(exprs, expr)
		}
	}
	return exprs
}

// namesIn returns the metric names the expressions use, once each, sorted.
func namesIn(exprs []string) []string {
	set := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			set[n] = true
		}
	}
	var names []string
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// scrapedNames returns the sample names of a Prometheus text exposition
// (a histogram's _bucket, _sum and _count each).
func scrapedNames(exposition string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// Every metric the Grafana dashboard and the alerts name is served by the
// manager's metrics endpoint once a callback went through: the manager runs
// against the test control plane, a config with a job step receives one
// signed callback (its FriendDeletion then runs, as no Job controller ends
// the Job) and one unsigned one, and /metrics is scraped.
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	g := NewWithT(t)
	dashboard, rules := namesIn(dashboardExprs(t)), namesIn(ruleExprs(t))
	if len(dashboard) == 0 || len(rules) == 0 {
		t.Fatalf("no metric names found: dashboard %v, rules %v", dashboard, rules)
	}

	ctrl.SetLogger(logr.Discard())
	ns := env.Namespace(t)
	opts := manager.TestOptions(env.Config, ns)
	metricsAddr, receiverAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
	// Plain HTTP without authentication (--metrics-secure=false): this test
	// checks names, not access, which test/install checks elsewhere.
	opts.Metrics.BindAddress = metricsAddr
	opts.Metrics.Secure = false
	opts.Receiver.BindAddress = receiverAddr
	opts.Receiver.StatusFlushInterval = 200 * time.Millisecond
	testenv.Go(t, func(ctx context.Context) error { return manager.Run(ctx, opts) })

	const token = "monitoring-token"
	createChatApp(t, ns, token)

	post := func(q url.Values) int {
		body := `{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{"From_Account":"id","To_Account":"id1"}]}`
		resp, err := http.Post("http://"+receiverAddr+"/callbacks/"+ns+"/chat-app?"+q.Encode(), "application/json", strings.NewReader(body))
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	query := func(sign bool) url.Values {
		now := strconv.FormatInt(time.Now().Unix(), 10)
		q := url.Values{"SdkAppid": {"1400000001"}, "CallbackCommand": {"Sns.CallbackFriendDelete"}, "contenttype": {"json"},
			"ClientIP": {"127.0.0.1"}, "OptPlatform": {"RESTAPI"}, "RequestTime": {now}}
		if sign {
			sum := sha256.Sum256([]byte(token + now))
			q.Set("Sign", hex.EncodeToString(sum[:]))
		}
		return q
	}
	g.Eventually(func() int { return post(query(true)) }).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Equal(http.StatusOK))
	g.Expect(post(query(false))).NotTo(Equal(http.StatusOK), "an unsigned callback is answered FAIL")

	g.Eventually(func(g Gomega) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK), string(b))
		exposition := string(b)
		// The stored callback's FriendDeletion runs its Job step.
		for _, series := range []string{
			`friend_deletion_frienddeletions{config="chat-app",namespace="` + ns + `",phase="Running"} 1`,
			`friend_deletion_receiver_callbacks_total{config="chat-app",namespace="` + ns + `",reason="` + webhook.ReasonAccepted + `",result="OK"} 1`,
		} {
			g.Expect(strings.Contains(exposition, series)).To(BeTrue(), "/metrics lacks %s", series)
		}
		served := scrapedNames(exposition)
		var missing []string
		for what, names := range map[string][]string{dashboardFile: dashboard, "the PrometheusRule": rules} {
			for _, n := range names {
				if !served[n] {
					missing = append(missing, what+" uses "+n)
				}
			}
		}
		g.Expect(missing).To(BeEmpty(), "metrics the manager's /metrics does not serve")
	}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
	t.Logf("dashboard metrics %v; alert metrics %v", dashboard, rules)
}

// The dashboard ConfigMap carries the chart's dashboard file for the
// Grafana sidecar.
func TestChartGrafanaDashboard(t *testing.T) {
	objs := decode(t, mustHelmTemplate(t, "ops", "--values", everything))
	cm := get[corev1.ConfigMap](t, objs, "ConfigMap", release+"-dashboard")
	if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Operators" {
		t.Errorf("dashboard ConfigMap labels %v, annotations %v; want grafana_dashboard: \"1\" and the folder annotation", cm.Labels, cm.Annotations)
	}
	var got, want any
	if err := json.Unmarshal([]byte(cm.Data["friend-deletion-operator.json"]), &got); err != nil {
		t.Fatalf("the ConfigMap's dashboard is not JSON: %v", err)
	}
	_ = json.Unmarshal(readFile(t, filepath.Join(dashboardFile)), &want)
	if !equalJSON(got, want) {
		t.Errorf("the ConfigMap's dashboard differs from %s", dashboardFile)
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// rulesOf renders the chart's PrometheusRule with the given --set values
// and returns each alert's expression by name.
func rulesOf(t *testing.T, set ...string) map[string]string {
	t.Helper()
	args := []string{"--set", "metrics.prometheusRule.enabled=true"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	objs := decode(t, mustHelmTemplate(t, "ops", args...))
	rules := objs.ofKind("PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules rendered, want 1", len(rules))
	}
	groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	out := map[string]string{}
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rs {
			alert, _, _ := unstructured.NestedString(r.(map[string]any), "alert")
			expr, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
			out[alert] = expr
		}
	}
	return out
}

// The alerts cover the controllers and the receiver being gone (their own
// series, selected by the metrics Service's job and the release's
// namespace), failures counted as they happen, and the spool: its alerts
// go with it, the nearly-full threshold from receiver.spool.maxBytes.
func TestChartAlerts(t *testing.T) {
	rules := rulesOf(t, "receiver.spool.maxBytes=1000000")
	self := `namespace="ops", job="` + metricsSvc + `"`
	for alert, want := range map[string]string{
		"FriendDeletionControllersDown":  `absent(workqueue_depth{` + self + `, name="frienddeletion"})`,
		"FriendDeletionReceiverDown":     `absent(friend_deletion_receiver_requests_in_flight{` + self + `})`,
		"FriendDeletionsFailing":         `increase(friend_deletion_frienddeletions_finished_total{phase="Failed"}[1h])`,
		"FriendDeletionCallbacksSpooled": `friend_deletion_receiver_spool_entries{` + self + `}) > 0`,
		"FriendDeletionSpoolBacklog":     `friend_deletion_receiver_spool_oldest_entry_age_seconds{` + self + `})`,
		"FriendDeletionSpoolNearlyFull":  `friend_deletion_receiver_spool_bytes{` + self + `})` + "\n  > 800000",
		"FriendDeletionSpoolRejected":    `friend_deletion_receiver_spool_rejected_entries{` + self + `}) > 0`,
	} {
		if !strings.Contains(rules[alert], want) {
			t.Errorf("alert %s: expr %q, want it to contain %q", alert, rules[alert], want)
		}
	}
	noSpool := rulesOf(t, "receiver.spool.enabled=false")
	for alert := range noSpool {
		if strings.Contains(alert, "Spool") {
			t.Errorf("alert %s rendered without a spool", alert)
		}
	}
	if _, ok := noSpool["FriendDeletionReceiverDown"]; !ok {
		t.Errorf("no FriendDeletionReceiverDown without a spool")
	}
}
