package keystore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// benchDB is a database filled with keys for BenchmarkAuthenticate.
type benchDB struct {
	path   string
	sample []string // plaintexts of keys spread over the whole store
}

// fillBenchDB inserts n keys in batches of 50,000 per transaction, the way
// CreateKey would write them (same hash and hint), but without a
// transaction per key.
func fillBenchDB(d *benchDB, n int) error {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: d.path})
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.CreateAccount(ctx, "bench", "Bench"); err != nil {
		return err
	}
	every := max(n/1000, 1)
	const batch = 50000
	for start := 0; start < n; start += batch {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx,
			`INSERT INTO api_keys (id, account_id, name, hash, hint, created_at) VALUES (?, 'bench', ?, ?, ?, 0)`)
		if err != nil {
			tx.Rollback()
			return err
		}
		for i := start; i < min(start+batch, n); i++ {
			plaintext, err := newPlaintextKey()
			if err != nil {
				tx.Rollback()
				return err
			}
			h := HashKey(plaintext)
			if _, err := stmt.ExecContext(ctx, fmt.Sprintf("key_bench%08d", i), fmt.Sprintf("k%d", i), h[:], keyHint(plaintext)); err != nil {
				tx.Rollback()
				return err
			}
			if i%every == 0 && len(d.sample) < 1000 {
				d.sample = append(d.sample, plaintext)
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkAuthenticate measures key lookup with 1,000 and 1,000,000 keys
// in the store:
//
//   - cached: the key is in the in-process cache (the hot path of every
//     request after a key's first use): a hash and a map lookup, no SQL;
//   - miss: the cache holds a single entry, so nearly every lookup reads
//     the database through the unique index on the hash.
//
// Compare the ns/op of keys=1000 and keys=1000000 for each path:
//
//	go test -run='^$' -bench=Authenticate -benchtime=200000x ./keystore/
func BenchmarkAuthenticate(b *testing.B) {
	// The databases are built here, so plain test runs never pay for a
	// million inserts; the top-level function runs once, its TempDir
	// outlives the sub-benchmarks.
	dir := b.TempDir()
	for _, n := range []int{1000, 1000000} {
		d := &benchDB{path: filepath.Join(dir, fmt.Sprintf("keys-%d.db", n))}
		if err := fillBenchDB(d, n); err != nil {
			b.Fatal(err)
		}
		for _, path := range []struct {
			name      string
			cacheSize int
		}{{"cached", 0}, {"miss", 1}} {
			b.Run(fmt.Sprintf("keys=%d/%s", n, path.name), func(b *testing.B) {
				ctx := context.Background()
				s, err := Open(ctx, Options{Path: d.path, KeyCacheSize: path.cacheSize})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				// The sample was collected among n short-lived plaintexts,
				// so with n = 1M its strings lie scattered over a large
				// heap; copy them together so both sizes touch memory alike
				// and only the store differs.
				sample := make([]string, len(d.sample))
				for i, k := range d.sample {
					sample[i] = strings.Clone(k)
				}
				runtime.GC()
				// warm: every sampled key looked up once
				for _, k := range sample {
					if _, err := s.Authenticate(ctx, k); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := s.Authenticate(ctx, sample[i%len(sample)]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// benchAuthStore opens a store with 100 keys and returns it with their
// plaintexts and 100 well-formed plaintexts no key has, each looked up once
// (so both kinds are cached, the known keys positively, the others
// negatively).
func benchAuthStore(b *testing.B) (s *Store, known, unknown []string) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "ks.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.CreateAccount(ctx, "bench", "Bench"); err != nil {
		b.Fatal(err)
	}
	for range 100 {
		_, pt, err := s.CreateKey(ctx, "bench", "k", KeyPolicy{})
		if err != nil {
			b.Fatal(err)
		}
		known = append(known, pt)
		pt, err = newPlaintextKey()
		if err != nil {
			b.Fatal(err)
		}
		unknown = append(unknown, pt)
	}
	for i := range known {
		if _, err := s.Authenticate(ctx, known[i]); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, unknown[i]); !errors.Is(err, ErrUnknownKey) {
			b.Fatal(err)
		}
	}
	return s, known, unknown
}

// BenchmarkAuthenticateKnown and BenchmarkAuthenticateUnknown compare a
// request with a valid key with one in a flood of unknown (revoked,
// mistyped) keys; thanks to the negative cache the latter is no dearer:
//
//	go test -run='^$' -bench='AuthenticateKnown|AuthenticateUnknown' -cpu=1,8 ./keystore/
func BenchmarkAuthenticateKnown(b *testing.B) {
	s, known, _ := benchAuthStore(b)
	benchAuthenticate(b, s, known, nil)
}

func BenchmarkAuthenticateUnknown(b *testing.B) {
	s, _, unknown := benchAuthStore(b)
	benchAuthenticate(b, s, unknown, ErrUnknownKey)
}

func benchAuthenticate(b *testing.B, s *Store, keys []string, want error) {
	ctx := context.Background()
	var next atomic.Int64
	before := s.keyLookups.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7
		for pb.Next() {
			if _, err := s.Authenticate(ctx, keys[i%len(keys)]); !errors.Is(err, want) {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.StopTimer()
	// Each key may be looked up again once its cached answer expires,
	// not per request.
	if n := s.keyLookups.Load() - before; n > int64(len(keys)) {
		b.Fatalf("%d database lookups in %d requests with %d keys", n, b.N, len(keys))
	}
}
