package keystore

import (
	"sync"
	"sync/atomic"
	"time"
)

// keyEntry is what the hot path needs to know about a live key. Entries are
// immutable once cached; any change to a key (delete, rotate, rename) removes
// its entry so the next lookup reads the database again.
type keyEntry struct {
	id        string
	accountID string
	name      string
	expiresAt int64 // unix ms; 0 = never
	lineage   string
	models    []string // allowlist; nil = any model
	disabled  bool

	// lastTouched is the last-used time (unix ms) last handed to the
	// lastUsedTracker; it keeps the tracker's lock off most requests.
	lastTouched atomic.Int64
}

// Bounds of the negative cache: at most unknownCacheMax hashes of unknown
// keys, each remembered for unknownCacheTTL. The TTL only matters for keys
// that appear in the database without this Store creating them (none while
// the process lock keeps other writers out); keys created here are dropped
// from it at once.
const (
	unknownCacheMax = 10_000
	unknownCacheTTL = 5 * time.Second
)

// keyCache maps key hashes to entries, bounded in size, and remembers the
// hashes of well-formed keys the database did not know (the negative cache),
// so that a client retrying a revoked or mistyped key costs no SQL either.
//
// The epoch makes invalidation race-free: a lookup that read the database
// before a delete (or a creation) committed must not put its stale result
// back after the change removed it, so inserts, positive and negative, carry
// the epoch they started in and are dropped if any invalidation happened
// since.
type keyCache struct {
	mu      sync.RWMutex
	entries map[[32]byte]*keyEntry
	max     int
	epoch   uint64

	unknown    map[[32]byte]int64 // hash -> unix ms until which it is unknown
	unknownMax int
}

func newKeyCache(max int) *keyCache {
	return &keyCache{entries: make(map[[32]byte]*keyEntry), max: max,
		unknown: make(map[[32]byte]int64), unknownMax: unknownCacheMax}
}

// get returns the entry for h, or nil and, if h is negatively cached, the
// unix ms until which it stays unknown; and the epoch to put with.
func (c *keyCache) get(h [32]byte) (e *keyEntry, unknownUntil int64, epoch uint64) {
	c.mu.RLock()
	e, epoch = c.entries[h], c.epoch
	if e == nil {
		unknownUntil = c.unknown[h]
	}
	c.mu.RUnlock()
	return e, unknownUntil, epoch
}

// putUnknown remembers that no live key has hash h, until the unix ms
// until, unless an invalidation happened after epoch was read.
func (c *keyCache) putUnknown(h [32]byte, until int64, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if _, ok := c.unknown[h]; !ok && len(c.unknown) >= c.unknownMax {
		for k := range c.unknown { // evict an arbitrary entry, as put does
			delete(c.unknown, k)
			break
		}
	}
	c.unknown[h] = until
}

// put caches e unless an invalidation happened after epoch was read.
func (c *keyCache) put(h [32]byte, e *keyEntry, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if len(c.entries) >= c.max {
		// Evict an arbitrary entry (map iteration order is unspecified):
		// cheap, and good enough for a cache whose misses cost one
		// indexed read.
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[h] = e
}

// invalidate drops the entry for h, positive or negative, and fences off
// in-flight lookups. Call it after the change to h's key committed.
func (c *keyCache) invalidate(h [32]byte) {
	c.mu.Lock()
	c.epoch++
	delete(c.entries, h)
	delete(c.unknown, h)
	c.mu.Unlock()
}

func (c *keyCache) unknownLen() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.unknown)
}

func (c *keyCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// lastUsedTracker collects last-used times in memory so that a request does
// not cost a database write; Store.flushLastUsed writes them in one
// transaction every few seconds and on Close.
type lastUsedTracker struct {
	mu      sync.Mutex
	pending map[string]int64 // key id -> unix ms
}

func newLastUsedTracker() *lastUsedTracker {
	return &lastUsedTracker{pending: make(map[string]int64)}
}

// touchGranularityMS: a key's last-used time is recorded at most once a second.
const touchGranularityMS = 1000

func (t *lastUsedTracker) touch(e *keyEntry, nowMS int64) {
	prev := e.lastTouched.Load()
	if nowMS-prev < touchGranularityMS || !e.lastTouched.CompareAndSwap(prev, nowMS) {
		return
	}
	t.mu.Lock()
	if t.pending[e.id] < nowMS {
		t.pending[e.id] = nowMS
	}
	t.mu.Unlock()
}

func (t *lastUsedTracker) take() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) == 0 {
		return nil
	}
	p := t.pending
	t.pending = make(map[string]int64)
	return p
}

// restore puts back times whose write failed, keeping newer ones.
func (t *lastUsedTracker) restore(p map[string]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, ms := range p {
		if t.pending[id] < ms {
			t.pending[id] = ms
		}
	}
}

func (t *lastUsedTracker) peek(id string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending[id]
}

// clear drops every entry, positive and negative, and fences off in-flight
// lookups (a store sharing its database, after a gap in the change feed).
func (c *keyCache) clear() {
	c.mu.Lock()
	c.epoch++
	clear(c.entries)
	clear(c.unknown)
	c.mu.Unlock()
}
