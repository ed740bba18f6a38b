package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// fakeClock is a settable clock for the limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestLimiter(burst int, interval time.Duration) (*failureLimiter, *fakeClock, *testsupport.Buffer) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	logs := &testsupport.Buffer{}
	l := newFailureLimiter(burst, interval, clock.now, slog.New(slog.NewTextHandler(logs, nil)))
	return l, clock, logs
}

func TestLimiterBucket(t *testing.T) {
	l, clock, _ := newTestLimiter(10, 6*time.Second)
	const addr = "192.0.2.1"
	for i := range 10 {
		if ok, _, _ := l.allow(addr); !ok {
			t.Fatalf("failure %d refused within the burst", i+1)
		}
		l.fail(addr, "bad_token")
	}
	ok, wait, _ := l.allow(addr)
	if ok || wait <= 5*time.Second || wait > 6*time.Second {
		t.Fatalf("after the burst: allow = %v, retry after %v; want refused for about 6s", ok, wait)
	}
	if ok, _, _ := l.allow("192.0.2.2"); !ok {
		t.Errorf("another address is limited too")
	}
	clock.add(6 * time.Second)
	if ok, _, _ := l.allow(addr); !ok {
		t.Fatalf("refused after one interval")
	}
	l.fail(addr, "bad_token")
	if ok, _, _ := l.allow(addr); ok {
		t.Errorf("allowed twice after one interval")
	}
	if got := retryAfterSeconds(5200 * time.Millisecond); got != "6" {
		t.Errorf("Retry-After for 5.2s = %s, want 6", got)
	}
}

// One full line for the first failure of an address, then one summary per
// window with the counts, whatever the number of failures.
func TestLimiterAggregatesLogLines(t *testing.T) {
	l, clock, logs := newTestLimiter(10, 6*time.Second)
	const addr = "198.51.100.7"
	full := 0
	for range 5000 {
		ok, _, logNow := l.allow(addr)
		if ok {
			logNow = l.fail(addr, "invalid_token")
		}
		if logNow {
			full++
		}
	}
	if full != 1 {
		t.Errorf("%d failures to log in full, want 1 (the first)", full)
	}
	l.sweep(false) // window not over yet: no summary
	if logs.String() != "" {
		t.Errorf("summary before the window ended:\n%s", logs)
	}
	clock.add(limiterWindow)
	l.sweep(false)
	out := logs.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "failures=4999") ||
		!strings.Contains(out, "rateLimited=4990") || !strings.Contains(out, `reasons="invalid_token=9"`) {
		t.Errorf("summary = %q, want one line: 4999 failures, 4990 rate-limited, 9 invalid tokens", out)
	}
	// A quiet window closes; the next failure is logged in full again.
	clock.add(limiterWindow)
	l.sweep(false)
	clock.add(limiterWindow)
	if ok, _, _ := l.allow(addr); !ok || !l.fail(addr, "invalid_token") {
		t.Errorf("a failure after a quiet window is not logged in full")
	}
}

// Memory is bounded: at most limiterMaxEntries addresses, the least
// recently seen evicted (after its summary), idle ones forgotten.
func TestLimiterMemoryIsBounded(t *testing.T) {
	l, clock, logs := newTestLimiter(10, 6*time.Second)
	l.max = 100
	for i := range 1000 {
		addr := fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		l.fail(addr, "bad")
		l.fail(addr, "bad") // held back: summarised when evicted
	}
	if n := l.size(); n != 100 {
		t.Errorf("%d addresses tracked, want the cap of 100", n)
	}
	if n := strings.Count(logs.String(), "\n"); n != 900 {
		t.Errorf("%d summaries of evicted addresses, want 900", n)
	}
	clock.add(limiterIdleAfter + limiterWindow)
	l.sweep(false) // summaries of the window, and the window stays open
	clock.add(limiterWindow)
	l.sweep(false) // quiet window closed; bucket full, idle: forgotten
	if n := l.size(); n != 0 {
		t.Errorf("%d idle addresses still tracked", n)
	}
}

func TestClientAddr(t *testing.T) {
	for _, c := range []struct{ remote, want string }{
		{"192.0.2.1:5555", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:5555", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:1", "fe80::/64"},
		{"not-an-address", "not-an-address"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		if got := clientAddr(r); got != c.want {
			t.Errorf("clientAddr(%q) = %q, want %q", c.remote, got, c.want)
		}
	}
}

// The flood of issue 7: 5,000 bad node tokens from one address produced
// 10,000 log lines. Now: 401 for the burst, then 429 with Retry-After, and
// a handful of lines in all.
func TestBadTokenFloodIsLimitedAndAggregated(t *testing.T) {
	h := newHarness(t, map[string]string{"AUTH_FAILURE_BURST": "10", "AUTH_FAILURE_INTERVAL": "6s"})
	n := h.createNode("flooded")
	a := h.connect(n.ID, n.Token)
	before := strings.Count(h.logs.String(), "\n")

	const attempts = 5000
	statuses := map[int]int{}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	bad := n.Token[:len(n.Token)-4] + "AAAA" // a node token with a broken signature
	var retryAfter string
	// The server's clock stands still during the flood: the bucket earns
	// no token back however long the 5,000 requests take (one per 6 s of
	// its clock: TestLimiterBucket).
	frozen := time.Now()
	h.srv.setClock(func() time.Time { return frozen })
	start := time.Now()
	for i := range attempts {
		req, _ := http.NewRequest("GET", h.url+"/api/ws/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+bad)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	took := time.Since(start)
	if statuses[http.StatusUnauthorized] != 10 || statuses[http.StatusTooManyRequests] != attempts-10 {
		t.Errorf("statuses %v, want 10 x 401 then %d x 429", statuses, attempts-10)
	}
	if retryAfter == "" || retryAfter == "0" {
		t.Errorf("429 without a Retry-After (%q)", retryAfter)
	}
	// The connected agent is not affected; the enrollment endpoint is
	// limited for that address as well (for requests without the right
	// enrollment token: TestFloodedAddressKeepsValidCredentials).
	h.stillServes(a, n.ID)
	if resp, _ := h.request("POST", "/api/nodes/enroll", map[string]string{"name": "x"}, "wrong-enrollment-token"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("enrollment from the flooding address: %d, want 429", resp.StatusCode)
	}

	if err := h.srv.Close(); err != nil { // flushes the summaries
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n")[before:] {
		if strings.Contains(l, "level=DEBUG") {
			continue
		}
		lines = append(lines, l)
	}
	t.Logf("%d bad tokens in %v: %d log lines at info or above:\n%s", attempts, took.Round(time.Millisecond), len(lines), strings.Join(lines, "\n"))
	if len(lines) > 8 {
		t.Errorf("%d log lines for %d bad tokens, want a handful:\n%s", len(lines), attempts, strings.Join(lines, "\n"))
	}
	logs := h.logs.String()
	// Every refusal is counted: the first upgrade is logged in full, the
	// other 4,999 and the refused enrollment in the summary.
	if !strings.Contains(logs, "authentication failures from client address (summary)") ||
		!strings.Contains(logs, fmt.Sprintf("failures=%d", attempts-1+1)) {
		t.Errorf("no summary counting all %d refusals:\n%s", attempts, strings.Join(lines, "\n"))
	}
	if strings.Contains(logs, bad) || strings.Contains(logs, n.Token) {
		t.Errorf("a token in the logs")
	}
}

func TestLimiterStopsWithTheServer(t *testing.T) {
	l, _, _ := newTestLimiter(10, time.Second)
	go l.run()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := l.close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.close(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
}

// Review M3: the failure budget was checked before authentication, keyed
// by address only, so a workload on the agent's host (behind Docker NAT,
// or anyone behind the same proxy) sending garbage tokens kept every valid
// agent at that address out with 429, renewals included. Now only failures
// are gated: a valid current node token upgrades and a request with the
// right enrollment token is served whatever the address's budget, while
// bad tokens still get 429 and aggregated logs.
func TestFloodedAddressKeepsValidCredentials(t *testing.T) {
	h := newHarness(t, map[string]string{"AUTH_FAILURE_BURST": "10", "AUTH_FAILURE_INTERVAL": "1h", "NODE_TOKEN_TTL": "1h"})
	n := h.createNode("behind-nat")
	k := newTestKey(t)
	enrolled, _ := h.enrollWith(k.request("enrolled-behind-nat", time.Now().Add(-time.Minute)), http.StatusCreated)
	bad := n.Token[:len(n.Token)-4] + "AAAA" // broken signature
	flood := func(count int) map[int]int {
		statuses := map[int]int{}
		for range count {
			resp, _ := h.upgradeRequest(t, bad)
			statuses[resp.StatusCode]++
		}
		return statuses
	}
	if got := flood(50); got[http.StatusUnauthorized] != 10 || got[http.StatusTooManyRequests] != 40 {
		t.Fatalf("flood statuses %v, want 10 x 401 then 40 x 429", got)
	}

	// A valid current node token upgrades and its session works.
	a := h.connect(n.ID, n.Token)
	h.stillServes(a, n.ID)
	// A new enrollment and a renewal with the right enrollment token.
	fresh, _ := h.enrollWith(protocol.EnrollRequest{Name: "new-behind-nat"}, http.StatusCreated)
	if fresh.Token == "" {
		t.Fatalf("enrollment behind the flooded address: %+v", fresh)
	}
	renewal := k.request("enrolled-behind-nat", time.Now())
	renewal.NodeID, renewal.Token = enrolled.ID, enrolled.Token
	if renewed, _ := h.enrollWith(renewal, http.StatusOK); renewed.ID != enrolled.ID || renewed.Token == "" {
		t.Fatalf("renewal behind the flooded address: %+v", renewed)
	}

	// Failures are still gated: a bad node token, a wrong enrollment token,
	// a validly signed but revoked node token.
	if got := flood(5); got[http.StatusTooManyRequests] != 5 {
		t.Errorf("bad tokens after the valid ones: %v, want 5 x 429", got)
	}
	if resp, _ := h.request("POST", "/api/nodes/enroll", map[string]string{"name": "y"}, "wrong-enrollment-token"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("wrong enrollment token: %d, want 429", resp.StatusCode)
	}
	h.admin("PATCH", "/api/nodes/"+n.ID+"/token", nil, http.StatusOK)
	if resp, _ := h.upgradeRequest(t, n.Token); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("revoked token: %d, want 429", resp.StatusCode)
	}

	if err := h.srv.Close(); err != nil { // flushes the summaries
		t.Fatal(err)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "authentication failures from client address (summary)") || !strings.Contains(logs, "rateLimited=47") {
		t.Errorf("no summary counting the 47 rate-limited requests:\n%s", logs)
	}
	for _, tok := range []string{bad, n.Token, enrolled.Token, fresh.Token} {
		if strings.Contains(logs, tok) {
			t.Errorf("a token in the logs")
		}
	}
}
