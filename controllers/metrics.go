package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// Metrics of the FriendDeletions the controllers hold, computed from the
// manager's cache at each scrape, on the elected leader only (the other
// replicas report none, so a dashboard needs no de-duplication). Every
// CallbackConfig gets all its series, zero when nothing is there, so that
// alerts see a 0 rather than no data.
var (
	descFriendDeletions = prometheus.NewDesc("friend_deletion_frienddeletions",
		"FriendDeletions by config and phase (Pending, Running, Succeeded, Failed); finished ones until their retention deletes them.",
		[]string{"namespace", "config", "phase"}, nil)
	descOldestAge = prometheus.NewDesc("friend_deletion_oldest_unfinished_age_seconds",
		"Age (since it was received) of the oldest FriendDeletion in phase Pending or Running, by config; 0 when there is none.",
		[]string{"namespace", "config", "phase"}, nil)
	descRetentionOverdue = prometheus.NewDesc("friend_deletion_retention_overdue",
		"Finished FriendDeletions whose retention age (spec.retention) has passed but which still exist, by config; those beyond maxSucceeded or maxFailed are not counted.",
		[]string{"namespace", "config"}, nil)
)

// finishedTotal counts the FriendDeletions this replica recorded finished,
// once each: when the status write that gives one the phase Succeeded or
// Failed succeeds (countFinished). Unlike friend_deletion_frienddeletions it
// keeps growing while retention deletes finished objects, so an alert on
// its increase sees failures in steady state. Every CallbackConfig's
// series start at zero on the leader's first scrape (Collect), so that the
// first failure after a restart is an increase too.
var finishedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "friend_deletion_frienddeletions_finished_total",
	Help: "FriendDeletions recorded finished by this replica, by config and phase (Succeeded, Failed); each counted once, when the status write that finishes it succeeds.",
}, []string{"namespace", "config", "phase"})

func init() {
	ctrlmetrics.Registry.MustRegister(finishedTotal)
}

// finishedBy returns the phase a status write from before to after
// finished a FriendDeletion with; ok is false unless that write finished it.
func finishedBy(before, after *snsv1alpha1.FriendDeletion) (phase snsv1alpha1.Phase, ok bool) {
	if before.Status.Phase.Finished() || !after.Status.Phase.Finished() {
		return "", false
	}
	return after.Status.Phase, true
}

// countFinished counts a FriendDeletion in finishedTotal when the status
// write from before to after, which the API server took, finished it.
func countFinished(before, after *snsv1alpha1.FriendDeletion) {
	if phase, ok := finishedBy(before, after); ok {
		finishedTotal.WithLabelValues(after.Namespace, after.Spec.ConfigName, string(phase)).Inc()
	}
}

// phases are the phases reported, in order; a FriendDeletion not yet
// reconciled (no phase) counts as Pending.
var phases = []snsv1alpha1.Phase{snsv1alpha1.PhasePending, snsv1alpha1.PhaseRunning, snsv1alpha1.PhaseSucceeded, snsv1alpha1.PhaseFailed}

// configKey names a CallbackConfig.
type configKey struct{ namespace, name string }

// configStats is what the metrics report of one config's FriendDeletions.
type configStats struct {
	count            map[snsv1alpha1.Phase]int
	oldest           map[snsv1alpha1.Phase]time.Duration
	retentionOverdue int
}

// frienddeletionStats computes the metrics' values from the configs and
// FriendDeletions at time now.
func frienddeletionStats(configs []snsv1alpha1.CallbackConfig, fds []*snsv1alpha1.FriendDeletion, now time.Time) map[configKey]*configStats {
	stats := map[configKey]*configStats{}
	of := func(k configKey) *configStats {
		s := stats[k]
		if s == nil {
			s = &configStats{count: map[snsv1alpha1.Phase]int{}, oldest: map[snsv1alpha1.Phase]time.Duration{}}
			stats[k] = s
		}
		return s
	}
	byKey := map[configKey]*snsv1alpha1.CallbackConfig{}
	for i := range configs {
		k := configKey{configs[i].Namespace, configs[i].Name}
		byKey[k] = &configs[i]
		of(k)
	}
	for _, fd := range fds {
		k := configKey{fd.Namespace, fd.Spec.ConfigName}
		s := of(k)
		phase := fd.Status.Phase
		if phase == "" {
			phase = snsv1alpha1.PhasePending
		}
		s.count[phase]++
		if !phase.Finished() {
			if age := now.Sub(fd.CreationTimestamp.Time); age > s.oldest[phase] {
				s.oldest[phase] = age
			}
			continue
		}
		if c := fd.Status.CompletionTime; c != nil && fd.DeletionTimestamp.IsZero() &&
			now.After(c.Add(retentionFor(phase, byKey[k]))) {
			s.retentionOverdue++
		}
	}
	return stats
}

// frienddeletionCollector reports frienddeletionStats of the cache.
type frienddeletionCollector struct {
	reader client.Reader
	// cache, when set, is the cache behind reader: its FriendDeletion
	// informer's store is read in place (see frienddeletions).
	cache cache.Cache
	clock clock.PassiveClock
}

// frienddeletions returns the cached FriendDeletions, to be read only. It
// reads the informer's store in place when it can (one informer, synced):
// a list through the reader copies every object's struct, tens of
// megabytes per scrape when tens of thousands are retained.
func (c *frienddeletionCollector) frienddeletions(ctx context.Context) ([]*snsv1alpha1.FriendDeletion, error) {
	if c.cache != nil {
		inf, err := c.cache.GetInformer(ctx, &snsv1alpha1.FriendDeletion{}, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, err
		}
		if store, ok := inf.(interface{ GetStore() toolscache.Store }); ok && inf.HasSynced() {
			items := store.GetStore().List()
			fds := make([]*snsv1alpha1.FriendDeletion, 0, len(items))
			for _, it := range items {
				if fd, ok := it.(*snsv1alpha1.FriendDeletion); ok {
					fds = append(fds, fd)
				}
			}
			return fds, nil
		}
	}
	// Several namespaces (one informer each), or not synced yet: list.
	var list snsv1alpha1.FriendDeletionList
	if err := c.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	fds := make([]*snsv1alpha1.FriendDeletion, len(list.Items))
	for i := range list.Items {
		fds[i] = &list.Items[i]
	}
	return fds, nil
}

func (c *frienddeletionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descFriendDeletions
	ch <- descOldestAge
	ch <- descRetentionOverdue
}

// Collect lists from the cache without copying: the objects are only read.
func (c *frienddeletionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var configs snsv1alpha1.CallbackConfigList
	if err := c.reader.List(ctx, &configs, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(descFriendDeletions, err)
		return
	}
	fds, err := c.frienddeletions(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descFriendDeletions, err)
		return
	}
	for k, s := range frienddeletionStats(configs.Items, fds, c.clock.Now()) {
		for _, p := range phases {
			if p.Finished() {
				finishedTotal.WithLabelValues(k.namespace, k.name, string(p)) // a series from zero
			}
			ch <- prometheus.MustNewConstMetric(descFriendDeletions, prometheus.GaugeValue, float64(s.count[p]), k.namespace, k.name, string(p))
			if !p.Finished() {
				ch <- prometheus.MustNewConstMetric(descOldestAge, prometheus.GaugeValue, s.oldest[p].Seconds(), k.namespace, k.name, string(p))
			}
		}
		ch <- prometheus.MustNewConstMetric(descRetentionOverdue, prometheus.GaugeValue, float64(s.retentionOverdue), k.namespace, k.name)
	}
}

// metricsRunnable registers the collector with controller-runtime's
// registry, which the manager's metrics endpoint serves, while this replica
// leads, and unregisters it when the manager stops.
type metricsRunnable struct {
	collector *frienddeletionCollector
	registry  prometheus.Registerer
}

// NeedLeaderElection starts it on the leader only.
func (r *metricsRunnable) NeedLeaderElection() bool { return true }

func (r *metricsRunnable) Start(ctx context.Context) error {
	if err := r.registry.Register(r.collector); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		// Another manager in this process (tests) reports them already.
		ctrl.LoggerFrom(ctx).Info("FriendDeletion metrics are registered by another manager in this process")
		return nil
	}
	<-ctx.Done()
	r.registry.Unregister(r.collector)
	return nil
}

// addMetrics adds the FriendDeletion metrics to mgr.
func addMetrics(mgr ctrl.Manager, opts Options) error {
	return mgr.Add(&metricsRunnable{
		collector: &frienddeletionCollector{reader: mgr.GetClient(), cache: mgr.GetCache(), clock: opts.Clock},
		registry:  ctrlmetrics.Registry,
	})
}
