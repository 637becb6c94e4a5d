package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of issue 10, checked in the comparison.
const (
	targetWritesBatched   = 6
	targetWritesUnbatched = 14
	targetSpeedup         = 30
	targetStoredBytes     = 4 << 10
)

const mib = 1 << 20

// print prints one config's figures.
func (r *result) print() {
	if r.err != nil {
		return
	}
	n := r.deletions()
	fmt.Printf("\n=== %s: results\n", r.config)
	fmt.Printf("callbacks: %d sent in %s (%.1f/s), %d OK, %d FAIL, %d sent over a second late\n",
		r.sent, r.sendTook.Round(time.Millisecond), float64(r.sent)/r.sendTook.Seconds(), r.ok, r.fail, r.late)
	for why, count := range r.failReasons {
		fmt.Printf("  FAIL %dx: %s\n", count, why)
	}
	incomplete := ""
	if r.incomplete {
		incomplete = " (INCOMPLETE: -timeout passed first)"
	}
	fmt.Printf("deletions: %d Succeeded, %d Failed of %d; first callback to last finished %s: %.2f deletions/s end to end%s\n",
		r.succeeded, r.failed, r.ok, r.elapsed.Round(time.Millisecond), r.rate(), incomplete)
	fmt.Printf("  the last deletion finished %s after the last callback was answered\n", (r.elapsed - r.sendTook).Round(time.Millisecond))
	if r.rate() >= 0.9*float64(r.sent)/r.sendTook.Seconds() {
		fmt.Printf("  deletions kept up with the callbacks: raise -rate to find the limit\n")
	}
	fmt.Printf("http sink: %d requests, %d distinct Idempotency-Keys\n", r.sinkReqs, r.sinkKeys)

	fmt.Printf("API writes per deletion, all clients (apiserver_request_total, %d deletions): %.2f\n", r.ok, r.writesPerDeletion())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, res := range r.writes.resources() {
		if background[res] {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%.2f\t(%s)\n", res, r.writes.total1(res)/n, r.writes.verbs(res, n))
	}
	_ = tw.Flush()
	var bg []string
	for _, res := range r.writes.resources() {
		if background[res] {
			bg = append(bg, fmt.Sprintf("%s %.0f", res, r.writes.total1(res)))
		}
	}
	if len(bg) > 0 {
		fmt.Printf("  not counted, written on a clock: %s (in all)\n", strings.Join(bg, ", "))
	}

	fmt.Printf("bytes stored per retained deletion (JSON of every object left in the namespace / %d): %s\n", r.ok, kb(r.storedPerDeletion()))
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, s := range r.stored {
		each := 0.0
		if s.objects > 0 {
			each = float64(s.bytes) / float64(s.objects)
		}
		mf := ""
		if s.bytes > 0 {
			mf = fmt.Sprintf("managedFields %.0f%%", 100*float64(s.managedFields)/float64(s.bytes))
		}
		fmt.Fprintf(tw, "  %s\t%d objects\t%s each\t%s per deletion\t%s\n", s.kind, s.objects, kb(each), kb(float64(s.bytes)/n), mf)
	}
	_ = tw.Flush()
	for _, s := range r.stored {
		var reasons []string
		for reason := range s.reasons {
			reasons = append(reasons, reason)
		}
		sort.Strings(reasons)
		for _, reason := range reasons {
			fmt.Printf("    Event %s: %d (%.2f per deletion)\n", reason, s.reasons[reason], float64(s.reasons[reason])/n)
		}
	}
	fmt.Printf("  etcd database grew %s (%s per deletion), in use %s (%s per deletion); history not yet compacted included\n",
		kb(r.etcdDelta.total), kb(r.etcdDelta.total/n), kb(r.etcdDelta.inUse), kb(r.etcdDelta.inUse/n))
	fmt.Printf("manager peak RSS (VmHWM): controllers %.0f MiB, receiver %.0f MiB\n", float64(r.hwm["controllers"])/mib, float64(r.hwm["receiver"])/mib)
	fmt.Printf("load average at the end: %s\n", r.load)
}

// total1 is one resource's writes.
func (w writes) total1(res string) float64 {
	var t float64
	for _, v := range w[res] {
		t += v
	}
	return t
}

// printComparison prints the configs side by side with the targets.
func printComparison(results []*result, f flags) {
	fmt.Printf("\n=== side by side: %d callbacks per config at %g/s, etcd: %s, a fresh cluster per config\n", f.n, f.rate, fsyncWord(f.etcdFsync))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	header := "figure"
	for _, r := range results {
		header += "\t" + r.config
	}
	fmt.Fprintln(tw, header+"\ttarget")
	byName := map[string]*result{}
	for _, r := range results {
		if r.err == nil {
			byName[r.config] = r
		}
	}
	row := func(name, target string, cell func(r *result) string) {
		line := name
		for _, r := range results {
			if r.err != nil {
				line += "\tNOT RUN"
				continue
			}
			line += "\t" + cell(r)
		}
		fmt.Fprintln(tw, line+"\t"+target)
	}
	unbatched := byName[configUnbatched]
	row("deletions/s end to end", fmt.Sprintf("batched >= %dx unbatched", targetSpeedup), func(r *result) string {
		cell := fmt.Sprintf("%.2f", r.rate())
		if r.config == configBatched && unbatched != nil && unbatched.rate() > 0 {
			x := r.rate() / unbatched.rate()
			cell += fmt.Sprintf(" (%.1fx, %s)", x, verdict(x >= targetSpeedup))
		}
		if r.incomplete {
			cell += " INCOMPLETE"
		}
		return cell
	})
	row("  callbacks sent per second", "", func(r *result) string { return fmt.Sprintf("%.1f", float64(r.sent)/r.sendTook.Seconds()) })
	row("API writes per deletion", fmt.Sprintf("unbatched <= %d, batched <= %d", targetWritesUnbatched, targetWritesBatched), func(r *result) string {
		limit := float64(targetWritesUnbatched)
		if r.config == configBatched {
			limit = targetWritesBatched
		}
		return fmt.Sprintf("%.2f (%s)", r.writesPerDeletion(), verdict(r.writesPerDeletion() <= limit))
	})
	row("  of which Jobs created", "", func(r *result) string {
		return fmt.Sprintf("%.0f (%.3f per deletion)", r.writes["jobs"]["POST"], r.writes["jobs"]["POST"]/r.deletions())
	})
	row("bytes stored per deletion", "<= 4 KB", func(r *result) string {
		return fmt.Sprintf("%s (%s)", kb(r.storedPerDeletion()), verdict(r.storedPerDeletion() <= targetStoredBytes))
	})
	row("etcd db growth per deletion", "", func(r *result) string { return kb(r.etcdDelta.total / r.deletions()) })
	row("controllers peak RSS", "<= 250 MiB with 50,000 retained (make bench-retained)", func(r *result) string {
		return fmt.Sprintf("%.0f MiB", float64(r.hwm["controllers"])/mib)
	})
	row("receiver peak RSS", "", func(r *result) string { return fmt.Sprintf("%.0f MiB", float64(r.hwm["receiver"])/mib) })
	row("callbacks answered FAIL", "0", func(r *result) string { return fmt.Sprintf("%d", r.fail) })
	row("FriendDeletions Failed", "0", func(r *result) string { return fmt.Sprintf("%d", r.failed) })
	_ = tw.Flush()
	var notRun []string
	for _, r := range results {
		if r.err != nil {
			notRun = append(notRun, fmt.Sprintf("%s: %v", r.config, r.err))
		}
	}
	sort.Strings(notRun)
	for _, s := range notRun {
		fmt.Printf("NOT RUN %s\n", s)
	}
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

// kb formats bytes as KB (1024) or MB.
func kb(b float64) string {
	if b >= mib || b <= -mib {
		return fmt.Sprintf("%.1f MB", b/mib)
	}
	return fmt.Sprintf("%.2f KB", b/1024)
}
