package docker

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// fakeLog is a container's log and state as a fake daemon serves them: each
// logs request gets the entries at or after its since (Docker's filter is
// inclusive), up to the number the test's script allows, then the stream ends.
type fakeLog struct {
	t   *testing.T
	tty bool

	mu       sync.Mutex
	entries  []fakeEntry
	requests []url2
	// script[i] is how many entries request i may send before the engine
	// ends the stream (-1 or beyond the script: all).
	script []int
	// state is the container's state at inspection n (1, 2, ...) by the
	// follower (the lookup by name always sees it running); it runs with
	// mu held and may change entries.
	state       func(l *fakeLog, n int) fakeState
	inspections int
}

// states reports states[n-1] at inspection n, the last one after the end.
func states(s ...fakeState) func(*fakeLog, int) fakeState {
	return func(_ *fakeLog, n int) fakeState { return s[min(n, len(s))-1] }
}

type fakeEntry struct {
	at     time.Time
	stream byte
	text   string
}

type fakeState struct {
	running, restarting bool
	finished            time.Time
}

type url2 struct{ since, tail, timestamps, follow string }

func (l *fakeLog) handler(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/_ping":
		w.Write([]byte("OK"))
	case strings.HasSuffix(p, "/containers/web-1/json"), strings.HasSuffix(p, "/containers/0123456789abcdef/json"):
		l.mu.Lock()
		st := fakeState{running: true}
		if strings.Contains(p, "0123") {
			l.inspections++
			st = l.state(l, l.inspections)
		}
		l.mu.Unlock()
		fmt.Fprintf(w, `{"Id":"0123456789abcdef","Name":"/web-1","State":{"Status":"x","Running":%t,"Restarting":%t,"FinishedAt":%q},
"Config":{"Tty":%t,"Labels":{"lormas.managed":"true","lormas.node":"node-1","lormas.container":"web-1"}}}`,
			st.running, st.restarting, st.finished.Format(time.RFC3339Nano), l.tty)
	case strings.HasSuffix(p, "/containers/0123456789abcdef/logs"):
		q := r.URL.Query()
		l.mu.Lock()
		i := len(l.requests)
		l.requests = append(l.requests, url2{q.Get("since"), q.Get("tail"), q.Get("timestamps"), q.Get("follow")})
		limit := -1
		if i < len(l.script) {
			limit = l.script[i]
		}
		entries := slices.Clone(l.entries)
		l.mu.Unlock()
		var since time.Time
		if s := q.Get("since"); s != "" {
			sec, nsec, _ := strings.Cut(s, ".")
			a, _ := strconv.ParseInt(sec, 10, 64)
			b, _ := strconv.ParseInt((nsec + "000000000")[:9], 10, 64)
			since = time.Unix(a, b)
		}
		sent := 0
		for _, e := range entries {
			if e.at.Before(since) {
				continue
			}
			if limit >= 0 && sent == limit {
				break
			}
			line := e.at.UTC().Format(stampLayout) + " " + e.text + "\n"
			if l.tty {
				w.Write([]byte(line))
			} else {
				w.Write(frame(e.stream, line))
			}
			sent++
		}
	default:
		l.t.Errorf("unexpected %s %s", r.Method, p)
		http.NotFound(w, r)
	}
}

func (l *fakeLog) reqs() []url2 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.requests)
}

func followAll(t *testing.T, e *Engine, cmd *protocol.Command) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	err := e.FollowLogs(ctx, logsOf(t, cmd), func(stream, line string) error {
		got = append(got, stream+":"+line)
		return nil
	})
	if err != nil {
		t.Fatalf("FollowLogs: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("FollowLogs did not end by itself")
	}
	return got
}

// TestFollowLogsResumesAfterEngineEndsStream: the engine ends the stream
// twice while the container runs, once in the middle of three lines that
// share a timestamp. The stream is opened again after the last line
// delivered and every line arrives once, in order; when the container has
// stopped, the lines the engine still holds are read before the end.
func TestFollowLogsResumesAfterEngineEndsStream(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	at := []time.Duration{1, 2, 3, 3, 3, 4, 5, 6, 6, 7} // lines 3-5 and 8-9 share a timestamp
	for _, tty := range []bool{false, true} {
		t.Run(map[bool]string{false: "multiplexed", true: "tty"}[tty], func(t *testing.T) {
			l := &fakeLog{t: t, tty: tty}
			var want []string
			for i, d := range at {
				stream := byte(1 + i%2)
				if tty {
					stream = 1
				}
				text := fmt.Sprintf("line %d", i+1)
				l.entries = append(l.entries, fakeEntry{at: base.Add(d * time.Microsecond), stream: stream, text: text})
				want = append(want, map[byte]string{1: "stdout", 2: "stderr"}[stream]+":"+text)
			}
			// 1: lines 1-4, then the engine ends the stream (running);
			// 2: from line 3's time: 3, 4 (skipped), 5-8, ends (stopped);
			// 3: the rest the engine holds after line 8's time.
			l.script = []int{4, 6, -1}
			l.state = states(fakeState{running: true}, fakeState{finished: base})
			e := fakeDaemon(t, l.handler)
			got := followAll(t, e, &protocol.Command{ContainerID: "web-1", Follow: true})
			if !slices.Equal(got, want) {
				t.Errorf("followed\n %q\nwant\n %q", got, want)
			}
			reqs := l.reqs()
			if len(reqs) != 3 {
				t.Fatalf("%d log requests %+v, want 3", len(reqs), reqs)
			}
			wantReqs := []url2{
				{"", "100", "1", "1"},
				{unixNano(base.Add(3 * time.Microsecond)), "all", "1", "1"},
				{unixNano(base.Add(6 * time.Microsecond)), "all", "1", "1"},
			}
			if !slices.Equal(reqs, wantReqs) {
				t.Errorf("requests\n %+v\nwant\n %+v", reqs, wantReqs)
			}
		})
	}
}

// TestFollowLogsKeepsTimestampsWhenAsked: with timestamps the lines carry
// Docker's, and a resumed stream is still told apart by them.
func TestFollowLogsKeepsTimestampsWhenAsked(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	l := &fakeLog{t: t, script: []int{1, -1}, state: states(fakeState{running: true}, fakeState{finished: base})}
	for i := range 3 {
		l.entries = append(l.entries, fakeEntry{at: base.Add(time.Duration(i) * time.Second), stream: 1, text: fmt.Sprint("t", i)})
	}
	e := fakeDaemon(t, l.handler)
	got := followAll(t, e, &protocol.Command{ContainerID: "web-1", Follow: true, Timestamps: true, Since: "1772600000"})
	want := []string{
		"stdout:2026-03-04T05:06:07.000000000Z t0",
		"stdout:2026-03-04T05:06:08.000000000Z t1",
		"stdout:2026-03-04T05:06:09.000000000Z t2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("followed %q, want %q", got, want)
	}
	if r := l.reqs(); len(r) < 1 || r[0].since != "1772600000.000000000" {
		t.Errorf("first request %+v, want the command's since in Docker's seconds.nanoseconds form", r)
	}
}

// TestFollowLogsAcrossRestart: the container stops and runs again (a
// restart, or its restart policy): the stream goes on with the new run's
// lines instead of ending.
func TestFollowLogsAcrossRestart(t *testing.T) {
	for _, restarting := range []bool{false, true} {
		t.Run(map[bool]string{false: "restart", true: "restart policy"}[restarting], func(t *testing.T) {
			base := time.Now().Add(-time.Minute)
			line := func(i int) fakeEntry {
				return fakeEntry{at: base.Add(time.Duration(i) * time.Second), stream: 1, text: fmt.Sprint("run line ", i)}
			}
			l := &fakeLog{t: t, entries: []fakeEntry{line(0), line(1)}}
			// A restart policy's backoff can outlast the grace: then only
			// the restarting state tells that the container comes back.
			stopped := time.Now()
			if restarting {
				stopped = base
			}
			l.state = func(l *fakeLog, n int) fakeState {
				switch {
				case n <= 3: // stopped just now (1: after the first stream, 2: after the catch-up, 3: first poll)
					return fakeState{finished: stopped, restarting: restarting}
				case n == 4: // started again, and writes
					l.entries = append(l.entries, line(2), line(3))
					return fakeState{running: true}
				default: // stopped for good
					return fakeState{finished: base}
				}
			}
			e := fakeDaemon(t, l.handler)
			got := followAll(t, e, &protocol.Command{ContainerID: "web-1", Follow: true})
			if len(got) != 4 || got[3] != "stdout:run line 3" {
				t.Errorf("followed %q, want all four lines: the stream must survive the restart", got)
			}
		})
	}
}

// TestFollowLogsEngineEndsAtOnceDoesNotSpin: an engine that ends every
// stream of a running container at once is asked again with a growing
// pause, not in a tight loop.
func TestFollowLogsEngineEndsAtOnceDoesNotSpin(t *testing.T) {
	l := &fakeLog{t: t, script: []int{0}, state: states(fakeState{running: true})}
	e := fakeDaemon(t, l.handler)
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	if err := e.FollowLogs(ctx, logsOf(t, &protocol.Command{ContainerID: "web-1", Follow: true}), func(string, string) error { return nil }); err != nil {
		t.Fatalf("FollowLogs: %v", err)
	}
	// 50+100+200+400 ms of pauses fit in 600 ms: about five requests; a
	// loop without a pause makes hundreds.
	if n := len(l.reqs()); n > 20 || n < 2 {
		t.Errorf("%d log requests in 600 ms, want a few (resumed with backoff)", n)
	}
}

// TestFollowLogsOpenErrorIsReturned: an engine that refuses the stream
// (a logging driver without reading) fails the command instead of being
// asked again and again.
func TestFollowLogsOpenErrorIsReturned(t *testing.T) {
	l := &fakeLog{t: t}
	e := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/logs") {
			w.WriteHeader(http.StatusNotImplemented)
			w.Write([]byte(`{"message":"configured logging driver does not support reading"}`))
			return
		}
		l.handler(w, r)
	})
	err := e.FollowLogs(context.Background(), logsOf(t, &protocol.Command{ContainerID: "web-1", Follow: true}), func(string, string) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "does not support reading") {
		t.Errorf("FollowLogs: %v, want the engine's refusal", err)
	}
}

// TestFollowLogsEngineGoesBack: Docker 20.10's json-file follower may read
// a log file again from its start after a rotation, inside one stream. The
// lines it sends again are left out; a line stamped a moment before the
// previous one but never delivered (stdout and stderr written the other way
// round) is delivered.
func TestFollowLogsEngineGoesBack(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	at := func(us int) string { return base.Add(time.Duration(us) * time.Microsecond).Format(stampLayout) }
	var body strings.Builder
	write := func(stream byte, us int, text string) { body.Write(frame(stream, at(us)+" "+text+"\n")) }
	write(1, 1, "line 1")
	write(1, 2, "line 2")
	write(1, 3, "line 3")
	write(2, 2, "inverted") // stamped before line 3, written after it
	write(1, 4, "line 4")
	write(1, 4, "line 5") // shares line 4's time
	// The follower goes back to a file's start: lines 2 to 5 again.
	write(1, 2, "line 2")
	write(1, 3, "line 3")
	write(2, 2, "inverted")
	write(1, 4, "line 4")
	write(1, 4, "line 5")
	write(1, 4, "line 6") // new, at the same time as lines 4 and 5
	write(1, 5, "line 7")
	l := &fakeLog{t: t, state: states(fakeState{finished: base})}
	e := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/logs") && r.URL.Query().Get("since") == "" {
			w.Write([]byte(body.String()))
			return
		}
		l.handler(w, r)
	})
	got := followAll(t, e, &protocol.Command{ContainerID: "web-1", Follow: true})
	want := []string{"stdout:line 1", "stdout:line 2", "stdout:line 3", "stderr:inverted", "stdout:line 4", "stdout:line 5",
		"stdout:line 6", "stdout:line 7"}
	if !slices.Equal(got, want) {
		t.Errorf("followed\n %q\nwant\n %q", got, want)
	}
}

func TestParseStamp(t *testing.T) {
	want := time.Date(2026, 11, 30, 2, 59, 41, 654824560, time.UTC).UnixNano()
	if got, ok := parseStamp([]byte("2026-11-30T02:59:41.654824560Z")); !ok || got != want {
		t.Errorf("parseStamp = %d, %t; want %d", got, ok, want)
	}
	for _, bad := range []string{"", "2026-11-30T02:59:41Z", "2026-11-30T02:59:41.654824560+01:00"} {
		if _, ok := parseStamp([]byte(bad)); ok {
			t.Errorf("parseStamp(%q) accepted", bad)
		}
	}
}
