package gwtest

import (
	"testing"
	"time"
)

// Eventually polls check every 10 ms until it returns "" and fails the
// test with its last message once within has passed. Metrics, for one, are
// recorded just after a request's hold is settled.
func Eventually(t testing.TB, within time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitAnswers waits (up to 20 s) until the mock has finished n answers and
// returns them.
func WaitAnswers(t testing.TB, mock *MockProvider, n int) []Answer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := mock.Answers()
		if len(a) >= n {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("mock finished %d answers, want %d", len(a), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// UpstreamBody returns the body the mock received for a request id,
// failing the test unless exactly one request carried that id.
func UpstreamBody(t testing.TB, reqs []Recorded, id string) []byte {
	t.Helper()
	var found []byte
	for _, r := range reqs {
		if r.RequestID == id {
			if found != nil {
				t.Fatalf("request %s reached the mock twice", id)
			}
			found = r.Body
		}
	}
	if found == nil {
		t.Fatalf("request %s never reached the mock", id)
	}
	return found
}
