// Command logbench measures lormas-agent's follow log streams against a
// flooding container and prints a table, with the same container's logs
// read directly from the Docker API in the same run as the reference:
//
//	go run ./scripts/logbench [-lines 1200000] [-pad 100] [-slow 10s] [-slow-rate 1048576] [-runs 3] [-stamped]
//
// It builds the agent (without the race detector), runs it against a small
// in-process WebSocket server and floods containers (labelled as the
// agent's) with numbered lines (the test workload, "flood line N xxx", -pad
// bytes each), three times:
//
//   - fast server, log files large enough that Docker never rotates them
//     during the flood: the agent's stream and a direct Docker API reader
//     follow the same container; their lines per second are the throughput
//     figures (-runs times; -stamped adds a direct reader that asks Docker
//     for timestamps, as the agent does);
//   - fast server, json-file -log-max-size x -log-max-file (Docker's and the
//     agent's default rotation): the same two readers;
//   - slow, then fast server, the same rotation: the server reads -slow-rate
//     bytes a second for -slow, then as fast as it can.
//
// The agent's RSS is sampled every 50 ms.
//
// For each reader the numbered lines are accounted for: delivered (once, in
// order), reported in gaps by the agent, or lost before any reader could
// read them (Docker's json-file follower falling behind its own log
// rotation; the direct reader shows the same).
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/scripts/internal/benchkit"
)

func main() {
	o := options{}
	flag.IntVar(&o.lines, "lines", 1200000, "lines the container writes")
	flag.IntVar(&o.pad, "pad", 100, "bytes per line")
	flag.DurationVar(&o.slow, "slow", 10*time.Second, "how long the server reads slowly")
	flag.Int64Var(&o.slowRate, "slow-rate", 1<<20, "bytes a second the slow server reads")
	flag.StringVar(&o.logMaxSize, "log-max-size", "10m", "json-file max-size of the rotating runs (the agent's default)")
	flag.IntVar(&o.logMaxFile, "log-max-file", 3, "json-file max-file of the rotating runs (the agent's default)")
	flag.StringVar(&o.buffer, "buffer", "", "LOG_STREAM_BUFFER for the agent (default: the agent's)")
	flag.IntVar(&o.runs, "runs", 3, "throughput runs (no rotation, fast server); the median ratio is reported")
	flag.BoolVar(&o.stamped, "stamped", false, "throughput runs: also a direct reader that asks for Docker's timestamps, as the agent does")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "logbench:", err)
		os.Exit(1)
	}
}

type options struct {
	lines, pad int
	slow       time.Duration
	slowRate   int64
	logMaxSize string
	logMaxFile int
	buffer     string
	runs       int
	stamped    bool
}

func run(o options) error {
	work, err := os.MkdirTemp("", "lormas-logbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "lormas-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=logbench", "-o", bin, "./cmd/lormas-agent")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build lormas-agent: %w", err)
	}
	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	img, err := dockertest.EnsureWorkloadImage(bctx, cli)
	cancel()
	if err != nil {
		return err
	}

	srv, err := newServer()
	if err != nil {
		return err
	}
	defer srv.close()
	env := []string{
		"SERVER_URL=ws://" + srv.addr, "NODE_TOKEN=logbench", "NODE_ID=logbench", "NODE_NAME=logbench",
		"STATE_DIR=" + filepath.Join(work, "state"), "HEALTH_ADDR=", "LOG_LEVEL=warn", "HEARTBEAT_INTERVAL=1h",
		"VOLUME_ROOTS=" + work, "PATH=" + os.Getenv("PATH"),
	}
	if o.buffer != "" {
		env = append(env, "LOG_STREAM_BUFFER="+o.buffer)
	}
	agent := exec.Command(bin)
	agent.Env = env
	agent.Stdout, agent.Stderr = os.Stderr, os.Stderr
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
	}()
	if err := srv.waitConnected(30 * time.Second); err != nil {
		return err
	}

	rotating := map[string]string{"max-size": o.logMaxSize, "max-file": strconv.Itoa(o.logMaxFile)}
	rotation := fmt.Sprintf("rotation %s x %d", o.logMaxSize, o.logMaxFile)
	var runs []*result
	for range max(o.runs, 1) {
		runs = append(runs, &result{logs: "no rotation", logOpts: map[string]string{"max-size": "4g", "max-file": "1"}, direct: true})
	}
	runs = append(runs,
		&result{logs: rotation, logOpts: rotating, direct: true},
		&result{logs: rotation, logOpts: rotating, slow: true})
	for _, r := range runs {
		if err := scenario(ctx, cli, srv, agent.Process.Pid, img, o, r); err != nil {
			return err
		}
	}

	fmt.Printf("\nflood: %d lines of %d bytes (%.0f MB); the agent's LOG_STREAM_BUFFER %s\n\n",
		o.lines, o.pad, float64(o.lines*o.pad)/1e6, cmp.Or(o.buffer, "default"))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "container logs\tserver\treader\tdelivered\tin gaps\tlost before any reader\trepeated/out of order\tseconds\tlines/s\tMB/s\t")
	for _, r := range runs {
		for _, rd := range []reading{r.directRead, r.stampedRead, r.agentRead} {
			if rd.reader == "" {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%.1f\t\n", r.logs, rd.server, rd.reader, rd.delivered, rd.gaps,
				rd.lost, rd.disorder, rd.seconds, rd.rate(), rd.rate()*float64(o.pad)/1e6)
		}
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "run\tagent lines/s vs direct\tagent result sent / dropped\tagent RSS idle / peak / growth\t")
	for _, r := range runs {
		ratio := "-"
		if r.direct && r.directRead.rate() > 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*r.agentRead.rate()/r.directRead.rate())
		}
		fmt.Fprintf(tw, "%s, %s server\t%s\t%d / %d\t%.1f / %.1f / %.1f MiB\t\n", r.logs, r.agentRead.server, ratio,
			r.sent, r.dropped, mib(r.idleRSS), mib(r.peakRSS), mib(r.peakRSS-r.idleRSS))
	}
	tw.Flush()
	var ratios []float64
	for _, r := range runs[:max(o.runs, 1)] {
		if r.directRead.rate() > 0 {
			ratios = append(ratios, r.agentRead.rate()/r.directRead.rate())
		}
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		fmt.Printf("\nthroughput, fast server, no rotation: the agent's stream moves %.1f%% of the lines/s of the direct reader (median of %d runs; %.1f%% to %.1f%%)\n",
			100*ratios[len(ratios)/2], len(ratios), 100*ratios[0], 100*ratios[len(ratios)-1])
		var stamped []float64
		for _, r := range runs[:max(o.runs, 1)] {
			if r.stampedRead.rate() > 0 {
				stamped = append(stamped, r.stampedRead.rate()/r.directRead.rate())
			}
		}
		if len(stamped) > 0 {
			slices.Sort(stamped)
			fmt.Printf("a direct reader with Docker's timestamps (which the agent needs to resume) moves %.1f%% of it (median)\n", 100*stamped[len(stamped)/2])
		}
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// reading is one reader's account of the numbered lines.
type reading struct {
	server, reader string
	delivered      int     // lines received once, in order
	gaps           int     // lines reported missing by the agent
	lost           int     // lines missing without a report
	disorder       int     // lines repeated or out of order
	seconds        float64 // first line to last
}

func (r reading) rate() float64 {
	if r.seconds <= 0 {
		return 0
	}
	return float64(r.delivered) / r.seconds
}

// tally accounts for numbered lines as they arrive.
type tally struct {
	next, pending int // the line due; lines of a gap not yet placed
	r             reading
	first, last   time.Time
}

func newTally(server, reader string) *tally {
	return &tally{next: 1, r: reading{server: server, reader: reader}}
}

func (t *tally) gap(n int) { t.pending += n; t.r.gaps += n }

func (t *tally) line(n int, at time.Time) {
	if t.first.IsZero() {
		t.first = at
	}
	t.last = at
	switch {
	case n < t.next:
		t.r.disorder++
		return
	case n > t.next:
		missing := n - t.next
		if missing > t.pending {
			t.r.lost += missing - t.pending
		}
	}
	t.pending = 0
	t.next = n + 1
	t.r.delivered++
}

// done closes the account: lines after the last one received up to total.
func (t *tally) done(total int) reading {
	if rest := total + 1 - t.next; rest > t.pending {
		t.r.lost += rest - t.pending
	}
	if !t.first.IsZero() {
		t.r.seconds = t.last.Sub(t.first).Seconds()
	}
	return t.r
}

// lineNumber reads N from "flood line N ...".
func lineNumber(l []byte) (int, bool) {
	const prefix = "flood line "
	if len(l) < len(prefix) || string(l[:len(prefix)]) != prefix {
		return 0, false
	}
	n, i := 0, len(prefix)
	for ; i < len(l) && l[i] >= '0' && l[i] <= '9'; i++ {
		n = 10*n + int(l[i]-'0')
	}
	return n, i > len(prefix)
}

// result is one run: how the container logs, who reads, and what came out.
type result struct {
	logs                  string
	logOpts               map[string]string
	direct, slow          bool
	directRead, agentRead reading
	stampedRead           reading // direct, with Docker's timestamps (as the agent asks)
	idleRSS, peakRSS      int64
	sent, dropped         int
}

var seq atomic.Int64

// scenario floods a container of the agent's, follows it through the agent
// (and, when res.direct, directly) and accounts for the lines.
func scenario(ctx context.Context, cli *client.Client, srv *server, pid int, img string, o options, res *result) error {
	name := fmt.Sprintf("logbench-%d-%d", os.Getpid(), seq.Add(1))
	serverName := "fast"
	if res.slow {
		serverName = fmt.Sprintf("%s at %.1f MB/s, then fast", o.slow, float64(o.slowRate)/1e6)
	}
	fmt.Fprintf(os.Stderr, "logbench: %s, %s server\n", res.logs, serverName)
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cli.ContainerRemove(rctx, name, container.RemoveOptions{Force: true})
	}()
	// Created as the agent would, with the run's log options.
	delay := 3 * time.Second
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := cli.ContainerCreate(cctx, &container.Config{
		Image:  img,
		Cmd:    []string{"-delay", delay.String(), "-flood", "-lines", strconv.Itoa(o.lines), "-pad", strconv.Itoa(o.pad), "-exit", "0"},
		Labels: map[string]string{"lormas.managed": "true", "lormas.node": "logbench", "lormas.container": name},
	}, &container.HostConfig{LogConfig: container.LogConfig{Type: "json-file", Config: res.logOpts}}, nil, nil, name)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	started := time.Now()
	if _, err := srv.command(&protocol.Command{Action: protocol.ActionStart, ContainerID: name}, time.Minute); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // the agent settles after start
	res.idleRSS = rss(pid)

	var wg sync.WaitGroup
	var directErr error
	if res.direct {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.directRead, directErr = followDirect(ctx, cli, name, o.lines, false)
		}()
		if res.logs == "no rotation" && o.stamped {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if res.stampedRead, err = followDirect(ctx, cli, name, o.lines, true); err != nil {
					directErr = err
				}
			}()
		}
	}
	stopRSS := make(chan struct{})
	var rssDone sync.WaitGroup
	rssDone.Add(1)
	go func() {
		defer rssDone.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				res.peakRSS = max(res.peakRSS, rss(pid))
			case <-stopRSS:
				return
			}
		}
	}()
	t := newTally(serverName, "lormas-agent")
	if res.slow {
		// The slow phase starts with the flood.
		srv.setRate(o.slowRate, started.Add(delay).Add(o.slow))
	}
	logs := &protocol.Command{ID: "follow-" + name, Action: protocol.ActionLogs, ContainerID: name, Follow: true}
	r, err := srv.follow(logs, t, time.Duration(o.lines/20000+120)*time.Second)
	close(stopRSS)
	rssDone.Wait()
	wg.Wait()
	if err != nil {
		return err
	}
	if directErr != nil {
		return directErr
	}
	res.agentRead = t.done(o.lines)
	var lr protocol.LogsResult
	if b, err := json.Marshal(r.Result); err == nil {
		_ = json.Unmarshal(b, &lr)
	}
	res.sent, res.dropped = lr.Sent, lr.Dropped
	if r.Status != protocol.StatusSuccess {
		return fmt.Errorf("follow %s: %s: %s", name, r.Status, r.Error)
	}
	return nil
}

// followDirect reads the container's logs from the Docker API, as fast as
// it can, until the stream ends; with stamps, Docker puts its timestamp
// before each line, as the agent asks it to (to resume a stream after the
// last line delivered).
func followDirect(ctx context.Context, cli *client.Client, name string, total int, stamps bool) (reading, error) {
	t := newTally("fast", "Docker API, direct")
	if stamps {
		t.r.reader += ", timestamps"
	}
	rc, err := cli.ContainerLogs(ctx, name, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true, Timestamps: stamps})
	if err != nil {
		return reading{}, fmt.Errorf("direct logs: %w", err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	var hdr [8]byte
	var partial []byte
	buf := make([]byte, 64<<10)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			break
		}
		size := int(binary.BigEndian.Uint32(hdr[4:]))
		if size > cap(buf) {
			buf = make([]byte, size)
		}
		p := buf[:size]
		if _, err := io.ReadFull(br, p); err != nil {
			break
		}
		now := time.Now()
		for {
			i := indexByte(p, '\n')
			if i < 0 {
				partial = append(partial, p...)
				break
			}
			line := p[:i]
			if len(partial) > 0 {
				line = append(partial, line...)
				partial = partial[:0]
			}
			if stamps {
				if j := indexByte(line, ' '); j >= 0 {
					line = line[j+1:]
				}
			}
			if n, ok := lineNumber(line); ok {
				t.line(n, now)
			}
			p = p[i+1:]
		}
	}
	return t.done(total), nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// rss reads the resident set size of pid.
func rss(pid int) int64 { return benchkit.RSSKiB(pid) << 10 }

// server is the agent's WebSocket peer: it sends commands and reads the
// agent's frames, throttled to a byte rate until a deadline when asked.
type server struct {
	addr string
	hs   *http.Server
	up   *gws.Upgrader

	mu        sync.Mutex
	conn      *gws.Conn
	connected chan struct{}
	results   map[string]chan protocol.CommandResult
	streams   map[string]*tally
	rate      int64
	rateUntil time.Time
}

func newServer() (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{addr: ln.Addr().String(), connected: make(chan struct{}),
		results: map[string]chan protocol.CommandResult{}, streams: map[string]*tally{}}
	s.up = gws.NewUpgrader(s, &gws.ServerOption{ReadMaxPayloadSize: 64 << 20, Recovery: gws.Recovery})
	s.hs = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.up.Upgrade(w, r)
		if err != nil {
			return
		}
		s.mu.Lock()
		first := s.conn == nil
		s.conn = c
		s.mu.Unlock()
		if first {
			close(s.connected)
		}
		go c.ReadLoop()
	})}
	go func() { _ = s.hs.Serve(ln) }()
	return s, nil
}

func (s *server) close() { _ = s.hs.Close() }

func (s *server) waitConnected(d time.Duration) error {
	select {
	case <-s.connected:
		return nil
	case <-time.After(d):
		return errors.New("the agent did not connect")
	}
}

func (s *server) setRate(bytesPerSecond int64, until time.Time) {
	s.mu.Lock()
	s.rate, s.rateUntil = bytesPerSecond, until
	s.mu.Unlock()
}

func (s *server) send(cmd *protocol.Command) (chan protocol.CommandResult, error) {
	if cmd.ID == "" {
		cmd.ID = fmt.Sprintf("cmd-%d", seq.Add(1))
	}
	ch := make(chan protocol.CommandResult, 1)
	s.mu.Lock()
	s.results[cmd.ID] = ch
	c := s.conn
	s.mu.Unlock()
	data, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return ch, c.WriteMessage(gws.OpcodeText, data)
}

func (s *server) command(cmd *protocol.Command, d time.Duration) (protocol.CommandResult, error) {
	ch, err := s.send(cmd)
	if err != nil {
		return protocol.CommandResult{}, err
	}
	select {
	case r := <-ch:
		if r.Status != protocol.StatusSuccess {
			return r, fmt.Errorf("%s %s: %s", cmd.Action, cmd.ContainerID, r.Error)
		}
		return r, nil
	case <-time.After(d):
		return protocol.CommandResult{}, fmt.Errorf("%s %s: no result within %s", cmd.Action, cmd.ContainerID, d)
	}
}

// follow sends a follow command, accounts for its lines in t and returns
// its result.
func (s *server) follow(cmd *protocol.Command, t *tally, d time.Duration) (protocol.CommandResult, error) {
	s.mu.Lock()
	s.streams[cmd.ID] = t
	s.mu.Unlock()
	ch, err := s.send(cmd)
	if err != nil {
		return protocol.CommandResult{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-time.After(d):
		return protocol.CommandResult{}, fmt.Errorf("follow %s: no result within %s", cmd.ContainerID, d)
	}
}

func (s *server) OnOpen(*gws.Conn)             {}
func (s *server) OnClose(*gws.Conn, error)     {}
func (s *server) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (s *server) OnPong(*gws.Conn, []byte)     {}
func (s *server) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	data := m.Bytes()
	now := time.Now()
	defer s.throttle(len(data))
	// A fast server spends little CPU, which the agent and Docker share
	// with it on this host: log frames are scanned, not decoded.
	if bytes.HasPrefix(data, []byte(`{"type":"log",`)) {
		s.scanLog(data, now)
		return
	}
	var v struct {
		Type      string          `json:"type"`
		CommandID string          `json:"commandId"`
		Line      string          `json:"line"`
		Lines     []string        `json:"lines"`
		Gap       int             `json:"gap"`
		Status    protocol.Status `json:"status"`
		Error     string          `json:"error"`
		Result    json.RawMessage `json:"result"`
	}
	if json.Unmarshal(data, &v) == nil {
		switch v.Type {
		case protocol.TypeLog:
			s.mu.Lock()
			t := s.streams[v.CommandID]
			s.mu.Unlock()
			if t != nil {
				if v.Gap > 0 {
					t.gap(v.Gap)
				}
				if v.Line != "" {
					v.Lines = []string{v.Line}
				}
				for _, l := range v.Lines {
					if n, ok := lineNumber([]byte(l)); ok {
						t.line(n, now)
					}
				}
			}
		case protocol.TypeCommandResult:
			s.mu.Lock()
			ch := s.results[v.CommandID]
			s.mu.Unlock()
			if ch != nil {
				select {
				case ch <- protocol.CommandResult{CommandID: v.CommandID, Status: v.Status, Error: v.Error, Result: v.Result}:
				default:
				}
			}
		}
	}
}

// throttle sleeps while the server reads slowly: the next frame waits and
// TCP pushes back on the agent.
func (s *server) throttle(n int) {
	s.mu.Lock()
	rate, until := s.rate, s.rateUntil
	s.mu.Unlock()
	if rate > 0 && time.Now().Before(until) {
		time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
	}
}

// scanLog accounts for a log frame by scanning it: its command id, its gap
// and the numbers of its lines ("flood line N", plain ASCII that JSON does
// not escape).
func (s *server) scanLog(data []byte, now time.Time) {
	field := func(name string) []byte {
		i := bytes.Index(data, []byte(`"`+name+`":`))
		if i < 0 {
			return nil
		}
		return data[i+len(name)+3:]
	}
	id := field("commandId")
	if len(id) < 2 || id[0] != '"' {
		return
	}
	id = id[1:]
	if j := bytes.IndexByte(id, '"'); j >= 0 {
		id = id[:j]
	}
	s.mu.Lock()
	t := s.streams[string(id)]
	s.mu.Unlock()
	if t == nil {
		return
	}
	if g := field("gap"); g != nil {
		n := 0
		for _, c := range g {
			if c < '0' || c > '9' {
				break
			}
			n = 10*n + int(c-'0')
		}
		t.gap(n)
	}
	rest := data
	for {
		i := bytes.Index(rest, []byte("flood line "))
		if i < 0 {
			return
		}
		rest = rest[i:]
		if n, ok := lineNumber(rest); ok {
			t.line(n, now)
		}
		rest = rest[len("flood line "):]
	}
}
