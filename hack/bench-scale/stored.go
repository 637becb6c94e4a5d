package main

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// storedKinds are the kinds whose objects a deletion leaves behind.
var storedKinds = []struct {
	name string
	gvr  schema.GroupVersionResource
}{
	{"FriendDeletions", snsv1alpha1.GroupVersion.WithResource("frienddeletions")},
	{"Jobs", schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}},
	{"Pods", schema.GroupVersionResource{Version: "v1", Resource: "pods"}},
	{"ConfigMaps", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}},
	{"Events", schema.GroupVersionResource{Version: "v1", Resource: "events"}},
}

// stored is what one kind holds in the namespace.
type stored struct {
	kind    string
	objects int
	bytes   int64
	// managedFields is the part of bytes in metadata.managedFields.
	managedFields int64
	// reasons counts Events by "<reporting component> <reason>".
	reasons map[string]int
}

// storedObjects lists every object of storedKinds in the namespace but
// those named in before (what was there before the first callback, such as
// the kube-root-ca.crt ConfigMap), and sums their sizes as JSON, as the API
// server returns them (managed fields included: etcd stores them too).
// etcd holds custom resources as this JSON and built-in kinds as protobuf,
// which is smaller, so for Jobs, Pods, ConfigMaps and Events the figure is
// an upper bound of what etcd stores.
func storedObjects(ctx context.Context, cfg *rest.Config, before map[string]bool) ([]stored, error) {
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var out []stored
	for _, k := range storedKinds {
		st := stored{kind: k.name}
		opts := metav1.ListOptions{Limit: 500}
		for {
			l, err := dc.Resource(k.gvr).Namespace(namespace).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("listing %s: %w", k.name, err)
			}
			for i := range l.Items {
				if before[k.name+"/"+l.Items[i].GetName()] {
					continue
				}
				data, err := json.Marshal(l.Items[i].Object)
				if err != nil {
					return nil, err
				}
				st.objects++
				st.bytes += int64(len(data))
				if mf, ok := l.Items[i].Object["metadata"].(map[string]any)["managedFields"]; ok {
					if data, err := json.Marshal(mf); err == nil {
						st.managedFields += int64(len(data))
					}
				}
				if k.name == "Events" {
					if st.reasons == nil {
						st.reasons = map[string]int{}
					}
					st.reasons[eventSource(l.Items[i].Object)+" "+fmt.Sprint(l.Items[i].Object["reason"])]++
				}
			}
			if opts.Continue = l.GetContinue(); opts.Continue == "" {
				break
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// objectNames names every object of storedKinds in the namespace, as
// "<kind>/<name>".
func objectNames(ctx context.Context, cfg *rest.Config) (map[string]bool, error) {
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, k := range storedKinds {
		l, err := dc.Resource(k.gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", k.name, err)
		}
		for _, o := range l.Items {
			names[k.name+"/"+o.GetName()] = true
		}
	}
	return names, nil
}

// eventSource is the component that reported an Event.
func eventSource(ev map[string]any) string {
	if c, ok := ev["reportingComponent"].(string); ok && c != "" {
		return c
	}
	if src, ok := ev["source"].(map[string]any); ok {
		if c, ok := src["component"].(string); ok && c != "" {
			return c
		}
	}
	return "unknown"
}
