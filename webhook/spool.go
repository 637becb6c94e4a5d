package webhook

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	snsv1alpha1 "github.com/imcallback/friend-deletion-operator/api/v1alpha1"
)

// SpoolFile is the name of the spool's database in Options.SpoolDir.
const SpoolFile = "spool.db"

// Buckets of the spool database.
var (
	// bucketEntries maps an 8-byte big-endian sequence number to a
	// spoolEntry, so that a cursor walks the entries oldest first.
	bucketEntries = []byte("entries")
	// bucketNames maps "<namespace>/<name>" of each entry's FriendDeletion
	// to its sequence key, so that a redelivery finds its entry.
	bucketNames = []byte("names")
	// bucketRejected keeps entries the API server refused on replay for a
	// reason no retry can fix (their namespace was deleted, say), keyed as
	// in bucketEntries, for an administrator to inspect. They still count
	// towards the size limit.
	bucketRejected = []byte("rejected")
)

var (
	// errSpoolFull is returned by put when the entry would take the spool
	// past its size limit.
	errSpoolFull = errors.New("the spool is full")
	// errSpoolClosed is returned by put after close.
	errSpoolClosed = errors.New("the spool is closed")
)

// spoolEntry is what the spool keeps for one callback: the FriendDeletion as
// the receiver built it, and when it was spooled.
type spoolEntry struct {
	SpooledAt time.Time                   `json:"spooledAt"`
	Object    *snsv1alpha1.FriendDeletion `json:"object"`
}

// spooled is one entry read back for replay.
type spooled struct {
	key   []byte
	entry spoolEntry
	// size is the entry's encoded size, as counted against the limit.
	size int64
}

// spoolState is the spool's contents in numbers, kept in memory beside the
// database and changed only after a commit.
type spoolState struct {
	entries int
	// bytes counts the encoded entries, rejected ones included: what the
	// size limit bounds.
	bytes int64
	// rejected counts the entries set aside as refused for good.
	rejected int
	// oldest is when the oldest waiting entry was spooled; zero when none
	// waits.
	oldest time.Time
	// perConfig counts the waiting entries of each CallbackConfig.
	perConfig map[types.NamespacedName]int
}

// spool keeps FriendDeletions that the API server did not take in time on
// the replica's disk until the replayer stores them. It is a bbolt database:
// every put is one transaction whose commit is fsynced before put returns,
// so an entry put without error survives a crash of the process or the
// machine.
type spool struct {
	db       *bolt.DB
	maxBytes int64
	// now is the clock of spooledAt.
	now func() time.Time
	// notify has a value when an entry was put since the replayer last
	// looked.
	notify chan struct{}

	// wmu serialises writes (the writer's commits and remove) with the
	// state changes that follow them, so that state matches the database.
	wmu sync.Mutex

	mu     sync.Mutex // guards state and closed
	state  spoolState
	closed bool
	// puts counts puts under way, so that close waits for them.
	puts sync.WaitGroup
	// reqs takes puts to the writer goroutine, which closes writerDone
	// when reqs is closed and it has finished.
	reqs       chan *putRequest
	writerDone chan struct{}
}

// openSpool opens, or creates, the spool in dir. It fails when another
// process holds the database for longer than lockTimeout.
func openSpool(dir string, maxBytes int64, lockTimeout time.Duration) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the spool folder: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, SpoolFile), 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// Reserve address space up front, so that a growing spool is not
		// remapped (which waits for every reader) while callbacks wait.
		InitialMmapSize: 256 << 20,
		// An OK answer rests on the commit being on disk.
		NoSync: false,
		// As etcd: the free list is rebuilt on open instead of written on
		// every commit, which keeps commits small.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the spool %s: %w", filepath.Join(dir, SpoolFile), err)
	}
	s := &spool{
		db:         db,
		maxBytes:   maxBytes,
		now:        time.Now,
		notify:     make(chan struct{}, 1),
		state:      spoolState{perConfig: map[types.NamespacedName]int{}},
		reqs:       make(chan *putRequest, maxGroup),
		writerDone: make(chan struct{}),
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketNames, bucketRejected} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return s.scan(tx)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reading the spool: %w", err)
	}
	if s.state.entries > 0 {
		s.wake()
	}
	go s.write()
	return s, nil
}

// scan counts what the database holds into s.state.
func (s *spool) scan(tx *bolt.Tx) error {
	st := spoolState{perConfig: map[types.NamespacedName]int{}}
	err := tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
		st.bytes += int64(len(v))
		st.entries++
		var e spoolEntry
		if json.Unmarshal(v, &e) != nil || e.Object == nil {
			return nil // counted; the replayer moves it aside
		}
		if st.oldest.IsZero() {
			st.oldest = e.SpooledAt
		}
		st.perConfig[entryConfig(e.Object)]++
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bucketRejected).ForEach(func(_, v []byte) error {
		st.bytes += int64(len(v))
		st.rejected++
		return nil
	})
	s.state = st
	return err
}

// entryConfig is the CallbackConfig an entry belongs to.
func entryConfig(fd *snsv1alpha1.FriendDeletion) types.NamespacedName {
	return types.NamespacedName{Namespace: fd.Namespace, Name: fd.Spec.ConfigName}
}

func nameKey(fd *snsv1alpha1.FriendDeletion) []byte {
	return []byte(fd.Namespace + "/" + fd.Name)
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// put writes fd to the spool and returns once the commit is on disk. It
// returns duplicate true, and writes nothing, when an entry of the same name
// is already there: the same callback, delivered again. It returns
// errSpoolFull when the entry would take the spool past its size limit, and
// any error of the write or the fsync: the entry is then not kept.
//
// Puts that arrive while a commit is under way are committed together in
// the next one (group commit): one fsync for all of them, so that callbacks
// arriving together in an outage do not queue for one fsync each.
func (s *spool) put(fd *snsv1alpha1.FriendDeletion) (duplicate bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, errSpoolClosed
	}
	s.puts.Add(1)
	s.mu.Unlock()
	defer s.puts.Done()

	obj := fd.DeepCopy()
	// Only what the receiver set; whatever a failed attempt may have left is
	// the API server's to assign on replay.
	obj.ResourceVersion, obj.UID, obj.Generation = "", "", 0
	obj.CreationTimestamp = metav1.Time{}
	obj.ManagedFields = nil
	at := s.now()
	val, err := json.Marshal(spoolEntry{SpooledAt: at, Object: obj})
	if err != nil {
		return false, fmt.Errorf("encoding the spool entry: %w", err)
	}
	req := &putRequest{at: at, val: val, name: nameKey(obj), config: entryConfig(obj), done: make(chan struct{})}
	s.reqs <- req
	<-req.done
	return req.duplicate, req.err
}

// putRequest is one put waiting for the writer.
type putRequest struct {
	at     time.Time
	val    []byte
	name   []byte
	config types.NamespacedName
	// Set by the writer before done is closed.
	duplicate bool
	err       error
	done      chan struct{}
}

// maxGroup bounds how many puts one commit takes.
const maxGroup = 256

// write commits the puts that arrive, as many at a time as are waiting,
// until reqs is closed.
func (s *spool) write() {
	defer close(s.writerDone)
	for req := range s.reqs {
		group := []*putRequest{req}
	more:
		for len(group) < maxGroup {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break more
				}
				group = append(group, r)
			default:
				break more
			}
		}
		s.commit(group)
		for _, r := range group {
			close(r.done)
		}
	}
}

// commit writes a group of puts in one transaction.
func (s *spool) commit(group []*putRequest) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	bytes := s.state.bytes
	s.mu.Unlock()
	var added []*putRequest
	err := s.db.Update(func(tx *bolt.Tx) error {
		added = added[:0]
		b := bytes
		names, entries := tx.Bucket(bucketNames), tx.Bucket(bucketEntries)
		for _, r := range group {
			r.duplicate, r.err = false, nil
			if names.Get(r.name) != nil {
				r.duplicate = true
				continue
			}
			if b+int64(len(r.val)) > s.maxBytes {
				r.err = errSpoolFull
				continue
			}
			seq, err := entries.NextSequence()
			if err != nil {
				return err
			}
			k := seqKey(seq)
			if err := entries.Put(k, r.val); err != nil {
				return err
			}
			if err := names.Put(r.name, k); err != nil {
				return err
			}
			b += int64(len(r.val))
			added = append(added, r)
		}
		return nil
	})
	if err != nil {
		for _, r := range group {
			r.duplicate, r.err = false, err
		}
		return
	}
	if len(added) == 0 {
		return
	}
	s.mu.Lock()
	for _, r := range added {
		s.state.entries++
		s.state.bytes += int64(len(r.val))
		if s.state.oldest.IsZero() {
			s.state.oldest = r.at
		}
		s.state.perConfig[r.config]++
	}
	s.mu.Unlock()
	s.wake()
}

func (s *spool) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// oldestEntries returns up to n waiting entries, oldest first. An entry that
// cannot be decoded is returned with a nil Object.
func (s *spool) oldestEntries(n int) ([]spooled, error) {
	var out []spooled
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			e := spooled{key: append([]byte(nil), k...), size: int64(len(v))}
			if err := json.Unmarshal(v, &e.entry); err != nil {
				e.entry.Object = nil
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// remove deletes stored entries from the spool. With reject set it moves
// them to the rejected bucket instead, where they stay for inspection.
func (s *spool) remove(done []spooled, reject bool) error {
	if len(done) == 0 {
		return nil
	}
	var oldest time.Time
	var removed int64
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		entries, names, rejected := tx.Bucket(bucketEntries), tx.Bucket(bucketNames), tx.Bucket(bucketRejected)
		for _, e := range done {
			v := entries.Get(e.key)
			if v == nil {
				continue
			}
			if reject {
				if err := rejected.Put(e.key, v); err != nil {
					return err
				}
			} else {
				removed += int64(len(v))
			}
			if err := deleteName(names, e); err != nil {
				return err
			}
			if err := entries.Delete(e.key); err != nil {
				return err
			}
		}
		if _, v := entries.Cursor().First(); v != nil {
			var first spoolEntry
			if json.Unmarshal(v, &first) == nil {
				oldest = first.SpooledAt
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range done {
		s.state.entries--
		if e.entry.Object != nil {
			k := entryConfig(e.entry.Object)
			if s.state.perConfig[k]--; s.state.perConfig[k] <= 0 {
				delete(s.state.perConfig, k)
			}
		}
	}
	s.state.bytes -= removed
	if reject {
		s.state.rejected += len(done)
	}
	s.state.oldest = oldest
	if s.state.entries <= 0 {
		s.state.entries, s.state.oldest = 0, time.Time{}
	}
	return nil
}

// requeueRejected moves the entries set aside as refused for good back to
// the waiting entries, under their old keys so that they keep their place
// (oldest first), for the replayer to try again: after the cause of the
// refusal was fixed (the namespace was created again, say). An entry whose
// name was spooled again since is dropped, being the same callback; one
// that cannot be decoded stays aside. It returns how many were requeued.
func (s *spool) requeueRejected() (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var requeued int
	err := s.db.Update(func(tx *bolt.Tx) error {
		requeued = 0
		entries, names, rejected := tx.Bucket(bucketEntries), tx.Bucket(bucketNames), tx.Bucket(bucketRejected)
		var keys [][]byte
		if err := rejected.ForEach(func(k, _ []byte) error {
			keys = append(keys, append([]byte(nil), k...))
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			v := append([]byte(nil), rejected.Get(k)...)
			var e spoolEntry
			if json.Unmarshal(v, &e) != nil || e.Object == nil {
				continue
			}
			if names.Get(nameKey(e.Object)) == nil {
				if err := entries.Put(k, v); err != nil {
					return err
				}
				if err := names.Put(nameKey(e.Object), k); err != nil {
					return err
				}
				requeued++
			}
			if err := rejected.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = s.db.View(s.scanLocked)
	}
	if err != nil {
		return 0, err
	}
	if requeued > 0 {
		s.wake()
	}
	return requeued, nil
}

// scanLocked recounts s.state from tx under s.mu.
func (s *spool) scanLocked(tx *bolt.Tx) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scan(tx)
}

// deleteName removes an entry's name from the index; for an entry that
// cannot be decoded it looks the name up by the entry's key.
func deleteName(names *bolt.Bucket, e spooled) error {
	if e.entry.Object != nil {
		return names.Delete(nameKey(e.entry.Object))
	}
	var found []byte
	err := names.ForEach(func(k, v []byte) error {
		if string(v) == string(e.key) {
			found = append([]byte(nil), k...)
		}
		return nil
	})
	if err != nil || found == nil {
		return err
	}
	return names.Delete(found)
}

// snapshot returns the spool's numbers, with a copy of the per-config
// counts.
func (s *spool) snapshot() spoolState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.perConfig = make(map[types.NamespacedName]int, len(s.state.perConfig))
	for k, v := range s.state.perConfig {
		st.perConfig[k] = v
	}
	return st
}

// close refuses further puts, waits for those under way, and closes the
// database.
func (s *spool) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.puts.Wait()
	close(s.reqs)
	<-s.writerDone
	return s.db.Close()
}

// errUndecodable is the replay error of an entry that cannot be decoded.
var errUndecodable = errors.New("the spool entry cannot be decoded")
