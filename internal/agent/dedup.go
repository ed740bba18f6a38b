package agent

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/lormas/lormas-agent/internal/logging"
)

// seenState is what the dedup table knows about a command id.
type seenState int

const (
	seenNew     seenState = iota // not seen: begin records it as running
	seenRunning                  // accepted earlier, result not produced yet
	seenDone                     // finished; the stored result is returned
	seenEvicted                  // finished; its result no longer stored (RESULT_STORE_BYTES)
)

// Bounds of the dedup table (docs/protocol.md: a command id seen in the last hour
// is never executed again).
const (
	// DefaultResultStoreBytes is RESULT_STORE_BYTES: the encoded results
	// kept to answer repeated ids, oldest evicted first.
	DefaultResultStoreBytes = 16 << 20
	// maxCommandIDs bounds the ids remembered, at 16 bytes each (32 MiB).
	// It is a last resort against a server that sends hundreds of
	// accepted commands a second for an hour: at the 60 commands a second
	// a busy node sees, an hour is 216,000 ids (3.3 MiB); this holds 580
	// a second for the whole hour. Ids forgotten for it are counted and
	// logged.
	maxCommandIDs = 2 << 20
	// idBucketWidth is the time span of one sealed bucket of ids: a
	// bucket is forgotten whole, between one hour and one hour plus this
	// after its ids were first seen.
	idBucketWidth = time.Minute
	// resultOverhead is what a stored result costs beyond its bytes: its
	// map entry and queue slot.
	resultOverhead = 96
)

// idHash is a command id as the table keeps it: the first 128 bits of its
// SHA-256. Ids are up to 256 bytes; 16 bytes each lets the table keep every
// id for the whole hour. A collision (two ids the table takes for one)
// would answer a command with another's result: SHA-256 makes finding one
// cost 2^64 work, out of reach of a server choosing ids.
type idHash struct{ hi, lo uint64 }

func hashID(id string) idHash {
	s := sha256.Sum256([]byte(id))
	return idHash{binary.BigEndian.Uint64(s[:8]), binary.BigEndian.Uint64(s[8:16])}
}

func compareHash(a, b idHash) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// dedup remembers command ids for ttl (docs/protocol.md: one hour) so that a
// command the server sends again is not executed twice, and the results
// of finished commands to answer such repeats.
//
// Ids and results are kept apart. Ids are kept compactly (idHash, in
// time-ordered buckets of sorted hashes: 16 bytes an id) for the whole
// ttl whatever the traffic, bounded only by maxCommandIDs. Results are
// bounded by bytes (RESULT_STORE_BYTES) and evicted oldest first; a
// repeated id whose result was evicted is still known (seenEvicted), so
// it is answered with an error and never executed again.
type dedup struct {
	mu          sync.Mutex
	ttl         time.Duration
	width       time.Duration // of a bucket
	maxIDs      int
	bucketMax   int   // the open bucket seals early at this size, so bound drops ids in steps of 1/16 of maxIDs
	resultBytes int64 // budget
	now         func() time.Time
	log         *slog.Logger
	warn        *logging.Limiter
	obs         observer // counts ids forgotten and results evicted

	open    map[idHash]struct{} // ids first seen since the last bucket sealed
	openEnd time.Time           // the open bucket seals then
	sealed  []idBucket          // oldest first
	ids     int                 // in open and sealed

	running map[idHash]time.Time // accepted, no result yet: when first seen
	results map[idHash]*storedResult
	queue   []*storedResult // results by completion, oldest first
	bytes   int64           // of the stored results, with resultOverhead each

	forgotten int64 // ids forgotten before ttl (maxCommandIDs)
	evicted   int64 // results evicted before ttl (RESULT_STORE_BYTES)
}

// idBucket holds the ids first seen before end, sorted.
type idBucket struct {
	end time.Time
	ids []idHash
}

type storedResult struct {
	h       idHash
	expires time.Time
	data    []byte
	gone    bool // evicted or expired; still in queue until popped
}

func newDedup(ttl time.Duration, maxIDs int, resultBytes int64, log *slog.Logger) *dedup {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &dedup{
		ttl: ttl, width: idBucketWidth, maxIDs: maxIDs, bucketMax: max(1, maxIDs/16), resultBytes: resultBytes,
		now: time.Now, log: log, warn: logging.Every(time.Minute),
		open: map[idHash]struct{}{}, running: map[idHash]time.Time{}, results: map[idHash]*storedResult{},
	}
}

// begin records id as running unless it is known; it returns what was
// known and, for a finished command, its encoded result.
func (d *dedup) begin(id string) (seenState, []byte) {
	h := hashID(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.prune(now)
	if state, result := d.state(h); state != seenNew {
		return state, result
	}
	d.running[h] = now
	d.add(h, now)
	return seenNew, nil
}

// lookup is begin without recording a new id.
func (d *dedup) lookup(id string) (seenState, []byte) {
	h := hashID(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(d.now())
	return d.state(h)
}

// state reports what is known about h. Called with d.mu held.
func (d *dedup) state(h idHash) (seenState, []byte) {
	if _, ok := d.running[h]; ok {
		return seenRunning, nil
	}
	if r, ok := d.results[h]; ok {
		return seenDone, r.data
	}
	if d.known(h) {
		return seenEvicted, nil
	}
	return seenNew, nil
}

// known reports whether h is among the remembered ids.
func (d *dedup) known(h idHash) bool {
	if _, ok := d.open[h]; ok {
		return true
	}
	for i := range d.sealed {
		if contains(d.sealed[i].ids, h) {
			return true
		}
	}
	return false
}

// contains binary-searches the sorted ids for h (slices.BinarySearchFunc
// with compareHash, at a third of its cost: a lookup searches every
// bucket of the hour).
func contains(ids []idHash, h idHash) bool {
	lo, hi := 0, len(ids)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x := ids[m]; x.hi < h.hi || x.hi == h.hi && x.lo < h.lo {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(ids) && ids[lo] == h
}

// add remembers h in the open bucket.
func (d *dedup) add(h idHash, now time.Time) {
	if len(d.open) == 0 {
		d.openEnd = now.Add(d.width)
	}
	if _, ok := d.open[h]; ok {
		return
	}
	d.open[h] = struct{}{}
	d.ids++
	if len(d.open) >= d.bucketMax {
		d.seal(now)
	}
	d.bound()
}

// complete stores the result of id, which begin recorded.
func (d *dedup) complete(id string, result []byte) {
	h := hashID(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.prune(now)
	first, ok := d.running[h]
	if !ok {
		return
	}
	delete(d.running, h)
	// A command that ran long (a session) may have outlived its id's
	// bucket: its id is kept for the hour after it finished too.
	if first.Before(now.Add(-d.width)) {
		d.add(h, now)
	}
	r := &storedResult{h: h, expires: now.Add(d.ttl), data: result}
	if old, ok := d.results[h]; ok {
		d.drop(old)
	}
	d.results[h] = r
	d.queue = append(d.queue, r)
	d.bytes += int64(len(result)) + resultOverhead
	d.evict(now)
}

// prune seals the open bucket when its time is up, forgets ids and results
// older than ttl, and enforces the bounds. Called with d.mu held.
func (d *dedup) prune(now time.Time) {
	if len(d.open) > 0 && !now.Before(d.openEnd) {
		d.seal(now)
	}
	for len(d.sealed) > 0 && !now.Before(d.sealed[0].end.Add(d.ttl)) {
		d.ids -= len(d.sealed[0].ids)
		d.obs.CommandIDsForgotten(ForgotExpired, len(d.sealed[0].ids))
		d.sealed[0] = idBucket{}
		d.sealed = d.sealed[1:]
	}
	d.evict(now)
}

// seal turns the open bucket into a sorted one.
func (d *dedup) seal(now time.Time) {
	ids := slices.SortedFunc(maps.Keys(d.open), compareHash)
	end := d.openEnd
	if now.Before(end) { // sealed early for size: its ids are no later than now
		end = now
	}
	d.sealed = append(d.sealed, idBucket{end: end, ids: slices.Clip(ids)})
	d.open = map[idHash]struct{}{}
}

// bound forgets the oldest buckets beyond maxIDs: only a server sending
// hundreds of accepted commands a second for an hour gets here. A repeat
// of one of those ids would run again, so it is counted and logged.
func (d *dedup) bound() {
	for d.ids > d.maxIDs && len(d.sealed) > 0 {
		n := len(d.sealed[0].ids)
		d.ids -= n
		d.forgotten += int64(n)
		d.obs.CommandIDsForgotten(ForgotLimit, n)
		if ok, suppressed := d.warn.Allow(); ok {
			d.log.Warn("command ids forgotten before the hour: the server sent more commands than the agent remembers; a repeat of one of them would run again",
				"forgotten", n, "forgottenTotal", d.forgotten, "limit", d.maxIDs, "suppressedLogs", suppressed,
				"firstSeenBefore", d.sealed[0].end)
		}
		d.sealed[0] = idBucket{}
		d.sealed = d.sealed[1:]
	}
}

// evict drops expired results and, beyond the byte budget, the oldest ones.
// Their ids stay known.
func (d *dedup) evict(now time.Time) {
	for len(d.queue) > 0 {
		r := d.queue[0]
		if !r.gone {
			expired := !now.Before(r.expires)
			if !expired && d.bytes <= d.resultBytes {
				return
			}
			if !expired {
				d.evicted++
				d.obs.ResultsEvicted(1)
			}
			d.drop(r)
		}
		d.queue[0] = nil
		d.queue = d.queue[1:]
	}
}

// drop forgets the stored result r (it stays in the queue, marked gone).
func (d *dedup) drop(r *storedResult) {
	if r.gone {
		return
	}
	r.gone = true
	d.bytes -= int64(len(r.data)) + resultOverhead
	r.data = nil
	if d.results[r.h] == r {
		delete(d.results, r.h)
	}
}

// dedupStats is what the table holds, for tests and logs.
type dedupStats struct {
	ids, results, running int
	resultBytes           int64
	forgotten, evicted    int64
}

func (d *dedup) stats() dedupStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(d.now())
	return dedupStats{ids: d.ids, results: len(d.results), running: len(d.running), resultBytes: d.bytes,
		forgotten: d.forgotten, evicted: d.evicted}
}
