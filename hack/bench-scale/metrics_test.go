package main

import (
	"strings"
	"testing"
)

func TestWritesFrom(t *testing.T) {
	const exposition = `# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 99
apiserver_request_total{code="200",component="apiserver",dry_run="",group="batch",resource="jobs",scope="resource",subresource="status",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 50
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="WATCH",version="v1"} 4
# HELP etcd_requests_total other metric
# TYPE etcd_requests_total counter
etcd_requests_total{operation="create",type="pods"} 1000
`
	w, err := writesFrom(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		res, verb string
		want      float64
	}{
		{"pods", "POST", 10},
		{"pods", "POST 409", 2}, // a refused write is a request too, counted apart
		{"pods/status", "PATCH", 7},
		{"jobs/status", "PUT", 3},
		{"leases", "PUT", 50},
		{"pods", "LIST", 0},
		{"pods", "WATCH", 0},
	} {
		if got := w[c.res][c.verb]; got != c.want {
			t.Errorf("%s %s = %g, want %g", c.verb, c.res, got, c.want)
		}
	}
	if got := w.total(false); got != 22 {
		t.Errorf("total without background = %g, want 22 (leases left out)", got)
	}
	if got := w.total(true); got != 72 {
		t.Errorf("total with background = %g, want 72", got)
	}

	later := writes{"pods": {"POST": 13, "POST 409": 2}, "pods/status": {"PATCH": 7}, "jobs": {"POST": 1}}
	d := later.since(w)
	if len(d) != 2 || d["pods"]["POST"] != 3 || d["jobs"]["POST"] != 1 {
		t.Errorf("since = %v, want pods POST 3 and jobs POST 1 only", d)
	}
	if got := d.resources(); strings.Join(got, ",") != "pods,jobs" {
		t.Errorf("resources = %v, want most written first", got)
	}
}

func TestWritesFromWithoutTheCounter(t *testing.T) {
	if _, err := writesFrom(strings.NewReader("# TYPE up gauge\nup 1\n")); err == nil {
		t.Fatal("writesFrom took an exposition without apiserver_request_total")
	}
}
