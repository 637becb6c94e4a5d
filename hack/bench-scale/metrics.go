package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
)

// writeVerbs are the verbs of apiserver_request_total that write (the
// metric names them by HTTP method: POST creates, PUT updates; a
// server-side apply is APPLY).
var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "DELETECOLLECTION": true, "APPLY": true}

// background are resources written on a clock, not per deletion: kwok's node
// Lease and status, the controllers' leader-election Lease. They are shown
// but left out of the per-deletion total.
var background = map[string]bool{"leases": true, "nodes": true, "nodes/status": true}

// writes counts API writes by resource ("jobs/status") and verb.
type writes map[string]map[string]float64

// scrapeWrites reads apiserver_request_total from the API server's
// /metrics and keeps the writes.
func scrapeWrites(ctx context.Context, cs kubernetes.Interface) (writes, error) {
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's /metrics: %w", err)
	}
	w, err := writesFrom(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing the API server's /metrics: %w", err)
	}
	return w, nil
}

// writesFrom sums the writes of apiserver_request_total in a Prometheus
// text exposition by resource[/subresource] and verb, over every other
// label (code, scope, group, version, component).
func writesFrom(r io.Reader) (writes, error) {
	families, err := parseMetrics(r)
	if err != nil {
		return nil, err
	}
	w := writes{}
	mf := families["apiserver_request_total"]
	if mf == nil {
		return nil, fmt.Errorf("no apiserver_request_total")
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		verb := labels["verb"]
		if !writeVerbs[verb] {
			continue
		}
		if c := labels["code"]; c != "" && !strings.HasPrefix(c, "2") {
			verb += " " + c // refused writes count too, apart
		}
		key := labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		if w[key] == nil {
			w[key] = map[string]float64{}
		}
		w[key][verb] += m.GetCounter().GetValue()
	}
	return w, nil
}

func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// since is w minus before, dropping what did not change.
func (w writes) since(before writes) writes {
	out := writes{}
	for res, verbs := range w {
		for verb, v := range verbs {
			if d := v - before[res][verb]; d > 0 {
				if out[res] == nil {
					out[res] = map[string]float64{}
				}
				out[res][verb] = d
			}
		}
	}
	return out
}

// total sums the writes, without the background resources unless all.
func (w writes) total(all bool) float64 {
	var t float64
	for res, verbs := range w {
		if background[res] && !all {
			continue
		}
		for _, v := range verbs {
			t += v
		}
	}
	return t
}

// resources lists the resources by writes, most first.
func (w writes) resources() []string {
	var out []string
	for res := range w {
		out = append(out, res)
	}
	sum := func(res string) float64 {
		var t float64
		for _, v := range w[res] {
			t += v
		}
		return t
	}
	sort.Slice(out, func(i, j int) bool {
		if si, sj := sum(out[i]), sum(out[j]); si != sj {
			return si > sj
		}
		return out[i] < out[j]
	})
	return out
}

// verbs describes one resource's writes by verb, per deletion.
func (w writes) verbs(res string, n float64) string {
	var parts []string
	for verb, v := range w[res] {
		parts = append(parts, fmt.Sprintf("%s %.2f", strings.ToLower(verb), v/n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// etcdSizes are etcd's database size and the part of it in use, in bytes.
type etcdSizes struct{ total, inUse float64 }

// scrapeEtcd reads etcd's database size from its /metrics.
func scrapeEtcd(ctx context.Context, etcdURL string) (etcdSizes, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(etcdURL, "/")+"/metrics", nil)
	if err != nil {
		return etcdSizes{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return etcdSizes{}, fmt.Errorf("reading etcd's /metrics: %w", err)
	}
	defer resp.Body.Close()
	families, err := parseMetrics(resp.Body)
	if err != nil {
		return etcdSizes{}, fmt.Errorf("parsing etcd's /metrics: %w", err)
	}
	gauge := func(name string) float64 {
		mf := families[name]
		if mf == nil || len(mf.GetMetric()) == 0 {
			return 0
		}
		return mf.GetMetric()[0].GetGauge().GetValue()
	}
	return etcdSizes{total: gauge("etcd_mvcc_db_total_size_in_bytes"), inUse: gauge("etcd_mvcc_db_total_size_in_use_in_bytes")}, nil
}
