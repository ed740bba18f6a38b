package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// report prints the table.
func (s *soak) report(snap snapshot, ref []refEvent, smp *sampler, metrics map[string]float64, logPath string, exitErr error, exitTook time.Duration, end time.Time) error {
	s.mu.Lock()
	cuts := append([]interval(nil), s.dockerCuts...)
	faults := append([]string(nil), s.faults...)
	replays, replayRan, firstStart, skipped := s.replays, s.replayRan, s.firstStart, s.skipped
	answers := make(map[string]int, len(s.replayAnswer))
	for k, v := range s.replayAnswer {
		answers[k] = v
	}
	s.mu.Unlock()

	// Commands.
	var (
		commands, lost, dupResults int
		byStatus                   = map[string]int{}
		errKinds                   = map[string]int{}
		foreignCmds, foreignOK     int
		bad, badOK                 int
		lostIDs                    []string
	)
	for id, t := range snap.cmds {
		switch t.kind {
		case kindLoad, kindProbe:
			commands++
			if t.results == 0 {
				lost++
				lostIDs = append(lostIDs, id)
				continue
			}
			extra := t.results - 1
			if id == firstStart {
				extra -= replays // its replays are answers, not duplicates
			}
			dupResults += max(extra, 0)
			k := string(t.first.Status)
			if t.first.Code != "" {
				k += " " + string(t.first.Code)
				what := "?"
				if f := strings.Fields(t.first.Error); len(f) > 0 {
					what = f[0]
				}
				if strings.Contains(t.first.Error, "Docker Engine is unreachable") {
					what += " (engine unreachable)"
				}
				errKinds[string(t.first.Code)+" "+what]++
			}
			byStatus[k]++
		case kindForeign:
			foreignCmds++
			if t.results > 0 && t.first.Code == protocol.CodeForbidden {
				foreignOK++
			}
		case kindBad:
			bad++
			if t.results > 0 && t.first.Code == protocol.CodeInvalid {
				badOK++
			}
		}
	}
	executions, agentLog, err := readAgentLog(logPath)
	if err != nil {
		return err
	}
	reexecuted := 0
	var reexecutedIDs []string
	for id, n := range executions {
		if n > 1 {
			reexecuted++
			reexecutedIDs = append(reexecutedIDs, id)
		}
	}

	// Events. Expected: what the daemon published for a managed container
	// at a time the agent could read it from Docker and relay it: when it
	// happened, or, for an event during a Docker outage (or before the
	// events stream was back after it), when the agent resubscribed and
	// the daemon replayed it; the agent must have been connected then and
	// for a grace after (an event whose connection ends first is dropped,
	// and the inventory after the next identify covers it). Missing: an
	// expected event never relayed by the end of the run; one relayed late
	// (after a reconnect, or after the outage) counts as delivered.
	const grace = 2 * time.Second
	received := map[string]int{}
	firstRecv := map[string]time.Time{}
	managedNames := map[string]bool{s.probe: true}
	for _, n := range s.names {
		managedNames[n] = true
	}
	foreignRelayed, othersRelayed := 0, 0
	var foreignKeys []string
	for _, e := range snap.events {
		received[e.key]++
		if _, ok := firstRecv[e.key]; !ok {
			firstRecv[e.key] = e.at
		}
		name, _, _ := strings.Cut(e.key, " ")
		switch {
		case managedNames[name]:
		case strings.HasPrefix(name, s.node) || name == "x":
			foreignRelayed++
			foreignKeys = append(foreignKeys, e.key)
		default:
			othersRelayed++ // lormas.managed without lormas.node: every agent's (policy.Ownership)
		}
	}
	// When the agent's events stream was back after each outage.
	type outageWindow struct{ from, back time.Time }
	var windows []outageWindow
	for _, c := range cuts {
		back := c.to
		if at, err := s.docker.SeenAfter("/events?", c.to); err == nil {
			back = at
		}
		windows = append(windows, outageWindow{from: c.from.Add(-time.Second), back: back})
	}
	readable := func(t time.Time) time.Time {
		for _, w := range windows {
			if !t.Before(w.from) && t.Before(w.back) {
				return w.back
			}
		}
		return t
	}
	connected := func(from, to time.Time) bool {
		for _, iv := range snap.intervals {
			if !iv.from.After(from) && !iv.to.Before(to) {
				return true
			}
		}
		return false
	}
	want := map[string]int{}
	wantAt := map[string]time.Time{}
	refManaged, refForeign, unscored, unscoredRelayed := 0, 0, 0, 0
	for _, e := range ref {
		if !e.managed {
			refForeign++
			continue
		}
		refManaged++
		ready := readable(e.at)
		if connected(ready, ready.Add(grace)) {
			want[e.key]++
			wantAt[e.key] = ready
			continue
		}
		unscored++
		if received[e.key] > 0 {
			unscoredRelayed++
		}
	}
	expected, missing, late, dupEvents := 0, 0, 0, 0
	var missingKeys []string
	for k, n := range want {
		expected += n
		if got := received[k]; got < n {
			missing += n - got
			missingKeys = append(missingKeys, k)
		} else if firstRecv[k].After(wantAt[k].Add(5 * time.Second)) {
			late++
		}
	}
	refCount := map[string]int{}
	for _, e := range ref {
		refCount[e.key]++
	}
	for k, n := range received {
		if n > refCount[k] && refCount[k] > 0 {
			dupEvents += n - refCount[k]
		}
	}

	// Docker outages.
	type outage struct {
		during, unavailable, other int
		maxAnswer                  time.Duration
		firstSuccess, resubscribed time.Duration
	}
	var outages []outage
	for _, c := range cuts {
		o := outage{firstSuccess: -1, resubscribed: -1}
		var firstOK time.Time
		for _, t := range snap.cmds {
			if t.kind != kindLoad || t.results == 0 {
				continue
			}
			if !t.firstAt.Before(c.from) && t.firstAt.Before(c.to) {
				o.during++
				if t.first.Code == protocol.CodeUnavailable || t.first.Code == protocol.CodeTimeout {
					o.unavailable++
				} else {
					o.other++
				}
				if !t.sent.Before(c.from) {
					o.maxAnswer = max(o.maxAnswer, t.firstAt.Sub(t.sent))
				}
			}
			if t.first.Status == protocol.StatusSuccess && t.firstAt.After(c.to) && t.sent.After(c.to) &&
				(firstOK.IsZero() || t.firstAt.Before(firstOK)) {
				firstOK = t.firstAt
			}
		}
		if !firstOK.IsZero() {
			o.firstSuccess = firstOK.Sub(c.to)
		}
		if at, err := s.docker.SeenAfter("/events?", c.to); err == nil {
			o.resubscribed = at.Sub(c.to)
		}
		outages = append(outages, o)
	}

	// Resources.
	smp.mu.Lock()
	samples := append([]sample(nil), smp.samples...)
	smp.mu.Unlock()
	var warm []sample
	for _, x := range samples {
		if x.at.Sub(samples[0].at) >= s.o.warmup {
			warm = append(warm, x)
		}
	}

	fmt.Printf("\nsoak: %s at %d commands/s over %d containers (+1 probe); faults: %s\n\n", s.o.duration, s.o.rate, len(s.names), strings.Join(faults, ", "))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...))
	}
	loadSecs := s.o.duration.Seconds()
	row("commands", "%d, %.1f/s (%s); %d ticks skipped: every container had %d commands without a result",
		commands, float64(commands)/loadSecs, statusList(byStatus), skipped, s.o.maxOutstanding)
	row("errors", "%s", statusList(errKinds))
	row("lost (no result)", "%d%s", lost, sample10(lostIDs))
	row("duplicate results", "%d (the server keeps the first): %d results not confirmed before a connection ended sent again, %d stored results replayed for commands the server resent",
		dupResults, agentLog.resent, agentLog.replayed)
	row("re-executed", "%d ids run twice (agent log)%s; replays of an old start: %d, started the container: %d; answered: %s",
		reexecuted, sample10(reexecutedIDs), replays, replayRan, statusList(answers))
	row("unmanaged commands", "%d, %d answered forbidden", foreignCmds, foreignOK)
	row("invalid commands", "%d, %d answered invalid", bad, badOK)
	row("events published (managed)", "%d; scored (the agent connected when it could read them): %d; not scored (published while disconnected, or the connection ended within %s): %d, of which relayed anyway %d",
		refManaged, expected, grace, unscored, unscoredRelayed)
	row("events missing", "%d never relayed by the end%s; %d relayed late (over 5 s after the agent could read them)", missing, sample10(missingKeys), late)
	row("events relayed twice", "%d", dupEvents)
	row("events of foreign containers", "%d published, %d relayed%s", refForeign, foreignRelayed, sample10(foreignKeys))
	if othersRelayed > 0 {
		row("", "(%d events of other tests' containers labelled lormas.managed without lormas.node, which every agent owns, relayed)", othersRelayed)
	}
	row("connections", "%d upgrades (%d refused), %d identifies, %d inventories (%d after a gap in the events stream or dropped events)",
		snap.upgrades, snap.refused, len(snap.identifies), len(snap.inventories), agentLog.resyncs)
	if metrics != nil {
		mv := func(k string) float64 { return metrics["lormas_agent_"+k] }
		row("agent metrics", "ids forgotten: %.0f expired, %.0f early (limit); results evicted %.0f; repeats answered: %.0f stored, %.0f in flight, %.0f running, %.0f conflict; results re-sent %.0f, dropped %.0f",
			mv(`command_ids_forgotten_total{reason="expired"}`), mv(`command_ids_forgotten_total{reason="limit"}`), mv("results_evicted_total"),
			mv(`repeated_commands_total{answer="stored"}`), mv(`repeated_commands_total{answer="in_flight"}`), mv(`repeated_commands_total{answer="running"}`),
			mv(`repeated_commands_total{answer="conflict"}`), mv("results_resent_total"), mv("results_dropped_total"))
		row("", "container events relayed %.0f, dropped %.0f disconnected, %.0f queue full; inventories %.0f identify, %.0f events missed, %.0f events dropped",
			mv("container_events_relayed_total"), mv(`container_events_dropped_total{reason="disconnected"}`), mv(`container_events_dropped_total{reason="queue_full"}`),
			mv(`inventories_sent_total{reason="identify"}`), mv(`inventories_sent_total{reason="events_missed"}`), mv(`inventories_sent_total{reason="events_dropped"}`))
	}
	for i, o := range outages {
		row(fmt.Sprintf("docker outage %d (%s)", i+1, s.o.dockerDown), "%d commands answered during it: %d unavailable/timeout, %d other (slowest answer to one sent during it %s); first success %s after it, events resubscribed %s after it",
			o.during, o.unavailable, o.other, o.maxAnswer.Round(time.Millisecond), dur(o.firstSuccess), dur(o.resubscribed))
	}
	if len(samples) > 0 {
		last := samples[len(samples)-1]
		rss := slope(warm, func(x sample) float64 { return x.rssKiB })
		fds := slope(warm, func(x sample) float64 { return x.fds })
		gor := slope(warm, func(x sample) float64 { return x.goroutines })
		row("RSS", "%.1f MiB at start, %.1f MiB at end, max %.1f MiB; slope after %s: %+.1f KiB/min",
			samples[0].rssKiB/1024, last.rssKiB/1024, maxOf(samples, func(x sample) float64 { return x.rssKiB })/1024, s.o.warmup, rss)
		heap := slope(warm, func(x sample) float64 { return x.heapKiB })
		row("Go heap in use", "%.1f MiB at start, %.1f MiB at end, max %.1f MiB; slope after %s: %+.1f KiB/min",
			samples[0].heapKiB/1024, last.heapKiB/1024, maxOf(samples, func(x sample) float64 { return x.heapKiB })/1024, s.o.warmup, heap)
		live := slope(warm, func(x sample) float64 { return x.liveKiB })
		row("Go heap live", "%.1f MiB at start, %.1f MiB at end, max %.1f MiB (after the last collection: what the agent holds); slope after %s: %+.1f KiB/min",
			samples[0].liveKiB/1024, last.liveKiB/1024, maxOf(samples, func(x sample) float64 { return x.liveKiB })/1024, s.o.warmup, live)
		row("open files", "%.0f at start, %.0f at end, max %.0f; slope %+.2f/min", samples[0].fds, last.fds, maxOf(samples, func(x sample) float64 { return x.fds }), fds)
		row("goroutines", "%.0f at start, %.0f at end, max %.0f; slope %+.2f/min", samples[0].goroutines, last.goroutines, maxOf(samples, func(x sample) float64 { return x.goroutines }), gor)
	}
	exit := "status 0"
	if exitErr != nil {
		exit = exitErr.Error()
	}
	row("SIGTERM", "%s after %s", exit, exitTook.Round(time.Millisecond))
	tw.Flush()
	_ = end
	return nil
}

// agentLogCounts is what the agent's log tells.
type agentLogCounts struct {
	resent   int // results sent again after a connection ended unconfirmed
	replayed int // stored results replayed for a repeated id
	resyncs  int // inventories after a broken events stream
}

// readAgentLog counts, per command id, the commands the agent ran
// ("command done" and "command failed" are logged once per execution;
// answers from the result store are logged as duplicates), and a few
// other lines.
func readAgentLog(path string) (map[string]int, agentLogCounts, error) {
	var c agentLogCounts
	f, err := os.Open(path)
	if err != nil {
		return nil, c, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg       string `json:"msg"`
			CommandID string `json:"commandId"`
			Count     int    `json:"count"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		switch {
		case rec.Msg == "command done" || rec.Msg == "command failed":
			out[rec.CommandID]++
		case strings.HasPrefix(rec.Msg, "results sent again"):
			c.resent += rec.Count
		case strings.HasPrefix(rec.Msg, "duplicate command id: replaying"):
			c.replayed++
		case strings.HasPrefix(rec.Msg, "container events may have been missed"):
			c.resyncs++
		}
	}
	return out, c, sc.Err()
}

// slope is the least-squares slope of f over the samples, per minute.
func slope(xs []sample, f func(sample) float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	t0 := xs[0].at
	for _, x := range xs {
		t := x.at.Sub(t0).Minutes()
		y := f(x)
		sx += t
		sy += y
		sxx += t * t
		sxy += t * y
	}
	n := float64(len(xs))
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func maxOf(xs []sample, f func(sample) float64) float64 {
	m := f(xs[0])
	for _, x := range xs {
		m = max(m, f(x))
	}
	return m
}

func statusList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func sample10(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	slices.Sort(ids)
	if len(ids) > 10 {
		ids = ids[:10]
	}
	return " (" + strings.Join(ids, "; ") + ")"
}

func dur(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(time.Millisecond).String()
}
