// Command clusterbench is the client of the several-instances benchmark
// (bench/cluster.sh). Given the sites and admin endpoints of one or more
// gateway instances sharing a database, and the mock provider behind them,
// it:
//
//  1. creates -accounts accounts with a large balance and one key each
//     through the first instance's admin API;
//  2. measures throughput: -connections clients for -duration, each
//     sending JSON chat completions with a key picked in turn (so one hot
//     account with -accounts 1), to the instances in turn (round robin);
//  3. measures latency below saturation: one client for -duration, against
//     the instances in turn, and the same directly against the mock; the
//     added p99 is the difference of the two p99s;
//  4. with two instances or more, -revocations times: creates a key on the
//     first instance, uses it on the second (200), deletes it through the
//     first instance's admin API and sends requests with it to the second
//     back to back until one gets 401: the time from the DELETE's start to
//     that 401.
//
// It prints one line per figure, key=value, for cluster.sh to collect.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var client = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     30 * time.Second,
	},
}

const chatBody = `{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}`

func main() {
	sites := flag.String("sites", "", "comma-separated gateway site URLs")
	admins := flag.String("admins", "", "comma-separated admin URLs, in the same order")
	mock := flag.String("mock", "", "mock provider URL (latency baseline)")
	accounts := flag.Int("accounts", 1000, "accounts (one key each); 1: one hot account")
	connections := flag.Int("connections", 32, "clients of the throughput run")
	duration := flag.Duration("duration", 10*time.Second, "length of each measured run")
	warmup := flag.Duration("warmup", 3*time.Second, "warm-up before the throughput run")
	revocations := flag.Int("revocations", 100, "deletions timed (with two instances or more)")
	label := flag.String("label", "", "prefix of the printed figures")
	flag.Parse()
	siteList, adminList := strings.Split(*sites, ","), strings.Split(*admins, ",")
	if *sites == "" || len(siteList) != len(adminList) {
		log.Fatal("-sites and -admins must list the same instances")
	}
	prefix := *label
	if prefix != "" {
		prefix += "."
	}

	keys := make([]string, *accounts)
	for i := range keys {
		id := fmt.Sprintf("bench-%04d", i)
		mustAdmin(adminList[0], "POST", "/ai-gateway/accounts", map[string]string{"id": id, "name": id}, nil)
		mustAdmin(adminList[0], "POST", "/ai-gateway/accounts/"+id+"/balance", map[string]string{"amount": "1000000", "note": "bench"}, nil)
		var k struct {
			Key string `json:"key"`
		}
		mustAdmin(adminList[0], "POST", "/ai-gateway/keys", map[string]string{"account": id, "name": "bench"}, &k)
		keys[i] = k.Key
	}
	time.Sleep(500 * time.Millisecond) // every instance hears of them

	// Every key once on every instance (caches, leases), then a warm-up.
	warm(siteList, keys, *connections)
	load(siteList, keys, *connections, *warmup)
	n, _ := load(siteList, keys, *connections, *duration)
	fmt.Printf("%sthroughput_rps=%.0f\n", prefix, float64(n)/duration.Seconds())

	_, gw := load(siteList, keys, 1, *duration)
	_, base := load([]string{*mock}, []string{"mock"}, 1, *duration)
	fmt.Printf("%sp50_ms=%.3f %sp99_ms=%.3f %smock_p99_ms=%.3f %sadded_p99_ms=%.3f\n",
		prefix, ms(pct(gw, 50)), prefix, ms(pct(gw, 99)), prefix, ms(pct(base, 99)), prefix, ms(pct(gw, 99)-pct(base, 99)))

	if len(siteList) >= 2 && *revocations > 0 {
		times := revocation(siteList, adminList, *revocations)
		fmt.Printf("%srevocation_p50_ms=%.1f %srevocation_p99_ms=%.1f %srevocation_max_ms=%.1f %srevocations=%d\n",
			prefix, ms(pct(times, 50)), prefix, ms(pct(times, 99)), prefix, ms(pct(times, 100)), prefix, len(times))
	}
}

// load runs clients for d and returns how many requests succeeded and
// their latencies. Any other answer than 200 ends the program.
func load(sites, keys []string, clients int, d time.Duration) (int64, []time.Duration) {
	var (
		ok   atomic.Int64
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
		next atomic.Int64
	)
	end := time.Now().Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				i := next.Add(1)
				site, key := sites[int(i)%len(sites)], keys[int(i/int64(len(sites)))%len(keys)]
				start := time.Now()
				status, body := chat(site, key)
				if status != http.StatusOK {
					log.Fatalf("%s: status %d: %s", site, status, body)
				}
				mine = append(mine, time.Since(start))
				ok.Add(1)
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lats)
	return ok.Load(), lats
}

// warm sends one request per key to every instance, with clients
// clients.
func warm(sites, keys []string, clients int) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(sites)*len(keys) {
					return
				}
				if status, body := chat(sites[i%len(sites)], keys[i/len(sites)]); status != http.StatusOK {
					log.Fatalf("warming: status %d: %s", status, body)
				}
			}
		}()
	}
	wg.Wait()
}

// revocation times n deletions on the first instance until the second
// refuses the key.
func revocation(sites, admins []string, n int) []time.Duration {
	var out []time.Duration
	for i := range n {
		var k struct {
			ID  string `json:"id"`
			Key string `json:"key"`
		}
		mustAdmin(admins[0], "POST", "/ai-gateway/keys", map[string]string{"account": "bench-0000", "name": fmt.Sprintf("revoked-%d", i)}, &k)
		for {
			status, body := chat(sites[1], k.Key)
			if status == http.StatusOK {
				break
			}
			if status != http.StatusUnauthorized {
				log.Fatalf("new key on the second instance: %d %s", status, body)
			}
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			mustAdmin(admins[0], "DELETE", "/ai-gateway/keys/"+k.ID, nil, nil)
			close(done)
		}()
		for {
			status, body := chat(sites[1], k.Key)
			if status == http.StatusUnauthorized {
				break
			}
			if status != http.StatusOK {
				log.Fatalf("deleted key on the second instance: %d %s", status, body)
			}
		}
		out = append(out, time.Since(start))
		<-done
	}
	slices.Sort(out)
	return out
}

func chat(site, key string) (int, []byte) {
	req, err := http.NewRequest("POST", site+"/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		log.Fatalf("%s: %v", site, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func mustAdmin(admin, method, path string, body, out any) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, admin+path, rd)
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		log.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "%s %s: %d %s\n", method, path, resp.StatusCode, b)
		os.Exit(1)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			log.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// pct is the p-th percentile of sorted durations (100: the largest).
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
