package webhook

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	bolt "go.etcd.io/bbolt"
)

// A receiver process started with envSpoolWriteLimit set limits, on
// SIGUSR1, the size its files may be written to (RLIMIT_FSIZE) to that
// many bytes, and creates the file named by envSpoolWriteLimitSet once it
// has. The kernel then refuses every write that would end past the limit
// with EFBIG, wherever the file ends; SIGXFSZ, which it sends as well and
// which would kill the process, is ignored. On SIGUSR2 it puts back the
// limit it had, and creates the file named by envSpoolWriteLimitLifted.
const (
	envSpoolWriteLimit       = "FDO_TEST_SPOOL_WRITE_LIMIT"
	envSpoolWriteLimitSet    = "FDO_TEST_SPOOL_WRITE_LIMIT_SET"
	envSpoolWriteLimitLifted = "FDO_TEST_SPOOL_WRITE_LIMIT_LIFTED"
)

// limitSpoolWritesOnSignal arms the limit of envSpoolWriteLimit for
// SIGUSR1 in a receiver process.
func limitSpoolWritesOnSignal() {
	limit, err := strconv.ParseUint(os.Getenv(envSpoolWriteLimit), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver process: bad", envSpoolWriteLimit, err)
		os.Exit(1)
	}
	signal.Ignore(syscall.SIGXFSZ)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		fmt.Fprintln(os.Stderr, "receiver process: reading RLIMIT_FSIZE:", err)
		os.Exit(1)
	}
	set := func(cur uint64, marker string) {
		rl := old
		rl.Cur = cur
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			fmt.Fprintln(os.Stderr, "receiver process: setting RLIMIT_FSIZE:", err)
			return
		}
		fmt.Fprintf(os.Stderr, "receiver process: RLIMIT_FSIZE is now %d\n", cur)
		if err := os.WriteFile(os.Getenv(marker), nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "receiver process: marking the limit changed:", err)
		}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGUSR1 {
				set(limit, envSpoolWriteLimitSet)
			} else {
				set(old.Cur, envSpoolWriteLimitLifted)
			}
		}
	}()
}

// scrapeMetrics reads a Prometheus text endpoint into its series, keyed
// by name and labels as written ({label="value",...}, labels in name
// order).
func scrapeMetrics(g Gomega, addr string) map[string]float64 {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		g.Expect(i).To(BeNumerically(">", 0), "metrics line %q", line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		g.Expect(err).NotTo(HaveOccurred(), "metrics line %q", line)
		series[line[:i]] = v
	}
	g.Expect(sc.Err()).NotTo(HaveOccurred())
	return series
}

// TestDrillSpoolWriteFails fails the spool's disk writes for real while the
// API server is cut: the receiver process limits the size its files may be
// written to (RLIMIT_FSIZE), so the kernel refuses the spool's page writes
// with EFBIG, as a full disk refuses writes into the database file's
// unallocated blocks with ENOSPC.
//
// The limit is the end of bbolt's two meta pages, not the end of the file:
// bbolt grows its file 16 MiB ahead of the data (its AllocSize, once the
// map is larger), so the pages a commit writes lie inside the file, and a
// limit at the file's end would be reached only after 16 MiB of callbacks.
// Every commit writes its data pages past the meta pages before it writes a
// meta page, so with the limit there each commit fails at its first write
// and the last committed state stays as it was.
//
// Callbacks spooled before the limit are answered OK. Those that arrive
// after it, together (one group commit) and one at a time, are each
// answered 503 FAIL because the write failed (spool writes counted as
// errors, none as spooled or timed out), none OK. Once the limit is lifted
// the same process spools callbacks again. It exits on SIGTERM with its
// spool holding exactly the callbacks answered OK, in a file that passes
// bbolt's consistency check. A new process on the same folder, with the
// API server back, stores each callback answered OK exactly once, none of
// those answered FAIL, and leaves an empty, consistent spool.
func TestDrillSpoolWriteFails(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns, h, proxy, kubeconfig, spoolDir := processDrill(t)
	pageSize := os.Getpagesize() // what bbolt gives a new database
	markers := t.TempDir()
	limitSet, limitLifted := filepath.Join(markers, "limit-set"), filepath.Join(markers, "limit-lifted")
	metricsAddr := freeAddr(t)

	first := startReceiverProcessEnv(t, "receiver-0", kubeconfig, spoolDir, 0, []string{
		envSpoolWriteLimit + "=" + strconv.Itoa(2*pageSize),
		envSpoolWriteLimitSet + "=" + limitSet,
		envSpoolWriteLimitLifted + "=" + limitLifted,
		envMetrics + "=" + metricsAddr,
	})
	first.waitReady()
	send := callbackSender(imBackend(), func() string { return first.base }, ns)
	warmUp(t, send, "warm-up")
	g.Expect(h.deletions()).To(HaveLen(1))

	// Spooled before the limit: the API server is cut.
	proxy.refuse()
	ok := map[string]bool{}
	var before []string
	for i := range 8 {
		before = append(before, fmt.Sprintf("before-%02d", i))
	}
	for id, r := range sendAll(t, send, before) {
		g.Expect(r.raw).To(Equal(okAnswer), "callback %s spooled before the limit", id)
		ok[id] = true
	}
	g.Expect(ok).To(HaveLen(len(before)))
	spooledSeries := `friend_deletion_receiver_spool_writes_total{result="spooled"}`
	g.Eventually(func(g Gomega) {
		m := scrapeMetrics(g, metricsAddr)
		g.Expect(m[spooledSeries]).To(BeEquivalentTo(len(before)))
		g.Expect(m["friend_deletion_receiver_spool_entries"]).To(BeEquivalentTo(len(before)))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	signalAndAwait(g, first, syscall.SIGUSR1, limitSet, "the receiver process never set the limit")

	// After the limit: first a burst, committed together, then one at a
	// time, each in a commit of its own after the previous one failed.
	var after []string
	for i := range 12 {
		after = append(after, fmt.Sprintf("burst-%02d", i))
	}
	answers := sendAll(t, send, after)
	for i := range 3 {
		id := fmt.Sprintf("alone-%02d", i)
		after = append(after, id)
		r, err := send(id)
		g.Expect(err).NotTo(HaveOccurred())
		answers[id] = r
	}
	g.Expect(answers).To(HaveLen(len(after)))
	for id, r := range answers {
		g.Expect(r.status).To(Equal(http.StatusServiceUnavailable), "callback %s while the spool cannot be written: %s", id, r.raw)
		g.Expect(r.answer.ActionStatus).To(Equal("FAIL"), "callback %s", id)
		g.Expect(r.answer.ErrorInfo).To(Equal("the FriendDeletion could not be stored or spooled"), "callback %s: the write failed, it did not time out", id)
	}
	m := scrapeMetrics(g, metricsAddr)
	g.Expect(m[spooledSeries]).To(BeEquivalentTo(len(before)), "nothing counted as spooled after the limit")
	g.Expect(m[`friend_deletion_receiver_spool_writes_total{result="error"}`]).To(BeEquivalentTo(len(after)), "each failed write counted")
	g.Expect(m[`friend_deletion_receiver_spool_writes_total{result="timeout"}`]).To(BeZero())
	g.Expect(m[fmt.Sprintf(`friend_deletion_receiver_callbacks_total{config="plain",namespace=%q,reason=%q,result="FAIL"}`, ns, ReasonSpoolFailed)]).
		To(BeEquivalentTo(len(after)))
	g.Expect(m["friend_deletion_receiver_spool_entries"]).To(BeEquivalentTo(len(before)))

	// The same process, its limit lifted, spools again after the failed
	// commits: what a failed commit leaves in memory does not spoil later
	// ones.
	signalAndAwait(g, first, syscall.SIGUSR2, limitLifted, "the receiver process never lifted the limit")
	var lifted []string
	for i := range 8 {
		lifted = append(lifted, fmt.Sprintf("lifted-%02d", i))
	}
	for id, r := range sendAll(t, send, lifted) {
		g.Expect(r.raw).To(Equal(okAnswer), "callback %s spooled once the limit was lifted", id)
		ok[id] = true
	}
	g.Expect(ok).To(HaveLen(len(before) + len(lifted)))
	g.Eventually(func(g Gomega) {
		m := scrapeMetrics(g, metricsAddr)
		g.Expect(m[spooledSeries]).To(BeEquivalentTo(len(ok)))
		g.Expect(m["friend_deletion_receiver_spool_entries"]).To(BeEquivalentTo(len(ok)))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	first.signal(syscall.SIGTERM)
	g.Expect(first.wait()).To(Succeed(), "the receiver exits cleanly on SIGTERM")
	logs, err := os.ReadFile(first.log)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(logs)).To(ContainSubstring("file too large"), "the spool's writes failed with EFBIG")
	for line := range strings.Lines(string(logs)) {
		if strings.Contains(line, "file too large") {
			t.Logf("the receiver logged: %s", strings.TrimSpace(line))
			break
		}
	}

	checkSpoolFile(t, spoolDir)
	db, err := bolt.Open(filepath.Join(spoolDir, SpoolFile), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(db.Info().PageSize).To(Equal(pageSize), "the limit was the end of the meta pages")
	g.Expect(db.Close()).To(Succeed())
	spooled := spooledRequestIDs(t, spoolDir)
	want := map[string]int{}
	for id := range ok {
		want[id] = 1
	}
	g.Expect(spooled).To(Equal(want), "the spool holds exactly the callbacks answered OK, once each")
	g.Expect(h.deletions()).To(HaveLen(1), "only the warm-up reached the API server")

	replayOnRestart(t, ns, proxy, kubeconfig, spoolDir, ok)
	stored := map[string]bool{}
	for _, fd := range h.deletions() {
		stored[fd.Spec.RequestID] = true
	}
	g.Expect(stored).To(Equal(ok), "stored: every callback answered OK, none answered FAIL")
	t.Logf("%d callbacks spooled and answered OK before the limit, %d answered 503 SpoolFailed under it (%d together, %d alone), %d spooled and answered OK by the same process once it was lifted; all %d answered OK stored once",
		len(before), len(after), len(after)-3, 3, len(lifted), len(ok))
}

// TestDrillSpoolWritesFailPartway sets the limit a few pages past the meta
// pages instead, after some callbacks were spooled: a commit whose pages
// all lie below it (pages freed by earlier commits, or the first new ones)
// succeeds, one that needs a page past it fails, possibly after writing
// the pages before it (a torn commit, which no meta page points to).
// Callbacks arrive in bursts, each committed in one or a few group
// commits, until three bursts had refusals. Whatever each callback is
// answered, OK means it is in the spool once and is stored once after a
// restart with the API server back; a refusal is 503 SpoolFailed because
// the write failed, and the callback is in neither place.
func TestDrillSpoolWritesFailPartway(t *testing.T) {
	requireEnv(t)
	g := NewWithT(t)
	ns, h, proxy, kubeconfig, spoolDir := processDrill(t)
	const limitPages = 10 // the two meta pages and eight more
	limit := limitPages * os.Getpagesize()
	markers := t.TempDir()
	limitSet := filepath.Join(markers, "limit-set")
	metricsAddr := freeAddr(t)

	first := startReceiverProcessEnv(t, "receiver-0", kubeconfig, spoolDir, 0, []string{
		envSpoolWriteLimit + "=" + strconv.Itoa(limit),
		envSpoolWriteLimitSet + "=" + limitSet,
		envSpoolWriteLimitLifted + "=" + filepath.Join(markers, "limit-lifted"),
		envMetrics + "=" + metricsAddr,
	})
	first.waitReady()
	send := callbackSender(imBackend(), func() string { return first.base }, ns)
	warmUp(t, send, "warm-up")

	proxy.refuse()
	ok, failed := map[string]bool{}, map[string]bool{}
	var before []string
	for i := range 8 {
		before = append(before, fmt.Sprintf("before-%02d", i))
	}
	for id, r := range sendAll(t, send, before) {
		g.Expect(r.raw).To(Equal(okAnswer), "callback %s spooled before the limit", id)
		ok[id] = true
	}
	signalAndAwait(g, first, syscall.SIGUSR1, limitSet, "the receiver process never set the limit")

	okUnder, bursts, refusedBursts := 0, 0, 0
	for ; refusedBursts < 3 && bursts < 40; bursts++ {
		var ids []string
		for i := range 20 {
			ids = append(ids, fmt.Sprintf("burst-%02d-%02d", bursts, i))
		}
		answers := sendAll(t, send, ids)
		g.Expect(answers).To(HaveLen(len(ids)))
		refused := false
		for id, r := range answers {
			if r.raw == okAnswer {
				ok[id] = true
				okUnder++
				continue
			}
			g.Expect(r.status).To(Equal(http.StatusServiceUnavailable), "callback %s: %s", id, r.raw)
			g.Expect(r.answer.ErrorInfo).To(Equal("the FriendDeletion could not be stored or spooled"), "callback %s: the write failed, it did not time out", id)
			failed[id], refused = true, true
		}
		if refused {
			refusedBursts++
		}
	}
	g.Expect(failed).NotTo(BeEmpty(), "the spool's writes never reached the limit in %d bursts", bursts)
	m := scrapeMetrics(g, metricsAddr)
	g.Expect(m[`friend_deletion_receiver_spool_writes_total{result="spooled"}`]).To(BeEquivalentTo(len(ok)))
	g.Expect(m[`friend_deletion_receiver_spool_writes_total{result="error"}`]).To(BeEquivalentTo(len(failed)))
	g.Expect(m[`friend_deletion_receiver_spool_writes_total{result="timeout"}`]).To(BeZero())
	g.Eventually(func(g Gomega) {
		g.Expect(scrapeMetrics(g, metricsAddr)["friend_deletion_receiver_spool_entries"]).To(BeEquivalentTo(len(ok)))
	}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())

	first.signal(syscall.SIGTERM)
	g.Expect(first.wait()).To(Succeed(), "the receiver exits cleanly on SIGTERM")
	checkSpoolFile(t, spoolDir)
	db, err := bolt.Open(filepath.Join(spoolDir, SpoolFile), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(db.Info().PageSize).To(Equal(os.Getpagesize()))
	tx, err := db.Begin(false)
	g.Expect(err).NotTo(HaveOccurred())
	used := tx.Size() // up to the last page the committed state may use
	g.Expect(tx.Rollback()).To(Succeed())
	g.Expect(db.Close()).To(Succeed())
	want := map[string]int{}
	for id := range ok {
		want[id] = 1
	}
	g.Expect(spooledRequestIDs(t, spoolDir)).To(Equal(want), "the spool holds exactly the callbacks answered OK, once each")

	replayOnRestart(t, ns, proxy, kubeconfig, spoolDir, ok)
	stored := map[string]bool{}
	for _, fd := range h.deletions() {
		stored[fd.Spec.RequestID] = true
	}
	g.Expect(stored).To(Equal(ok), "stored: every callback answered OK, none answered FAIL")
	t.Logf("limit at byte %d (%d pages): %d bursts of 20 under it, %d callbacks answered OK and %d answered 503 SpoolFailed; the committed state reaches byte %d; all %d answered OK stored once",
		limit, limitPages, bursts, okUnder, len(failed), used, len(ok))
}

// signalAndAwait sends p the signal and waits for the marker file it writes
// once it has acted on it; what says what the process never did.
func signalAndAwait(g Gomega, p *receiverProcess, sig syscall.Signal, marker, what string) {
	p.signal(sig)
	g.Eventually(func() error { _, err := os.Stat(marker); return err }).
		WithTimeout(time.Minute).WithPolling(20*time.Millisecond).Should(Succeed(), what)
}
