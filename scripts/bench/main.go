// Command bench measures lormas-agent against a direct Docker API call and,
// when given, against a peer agent (the seed's TypeScript agent, run with
// node) and against lormas-agent built from an earlier git revision, all
// in one run on this host against the same Docker Engine, and prints a
// table.
//
//	go run ./scripts/bench [-peer path/to/agent.js] [-base REV] [-n 2000] [-warmup 200]
//	                       [-lifecycle 20] [-rounds 3] [-idle 20s]
//
// The benchmark plays the control server itself: each agent dials an
// in-process WebSocket endpoint and gets its commands straight over its
// socket, so the figures are the agent's own cost and nothing of
// lormas-server's. A minimal relay (scripts/bench/relay: one Docker call
// per logs command, nothing checked, limited or logged) is always
// measured too: the floor of any agent between a server and Docker, its
// two WebSocket hops and process wake-ups, which the direct call does not
// have. Measured:
//
//   - logs: a `logs` command (lines=10) for a container that printed 100
//     lines, n sequential round trips after a warm-up, interleaved across
//     the subjects (one command to each in turn, so that load from other
//     processes falls on all of them alike, the order rotating every round
//     so that none always follows the same one: what a subject does after
//     its answer, such as a delivery ping, would otherwise always land on
//     its neighbour); direct is the same ContainerLogs tail=10 call on the
//     Docker API, read and split into lines;
//   - lifecycle: -lifecycle containers at once through create (seed form:
//     no pullPolicy), start, stop and delete; direct is ContainerCreate,
//     ContainerStart, ContainerStop and ContainerRemove; the median of
//     -rounds rounds, the subjects taking turns. The containers stop with
//     SIGKILL (stopSignal) on both sides: a workload stopped right after
//     its start may not have installed its SIGTERM handler yet and would
//     add Docker's 10 s grace period at random;
//   - start -> identified, idle RSS and CPU time over -idle, RSS after the
//     load.
package main

import (
	"bytes"
	"context"
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
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/scripts/internal/benchkit"
)

func main() {
	var o options
	flag.StringVar(&o.peer, "peer", os.Getenv("PEER"), "a peer agent to compare with: the seed's bundled agent.js, run with node (also PEER)")
	flag.StringVar(&o.base, "base", os.Getenv("BASE"), "also measure lormas-agent built from this git revision (also BASE)")
	flag.IntVar(&o.n, "n", 2000, "sequential logs commands per subject")
	flag.IntVar(&o.warmup, "warmup", 200, "logs commands per subject before measuring")
	flag.IntVar(&o.lifecycle, "lifecycle", 20, "containers through create+start+stop+delete at once")
	flag.IntVar(&o.rounds, "rounds", 3, "lifecycle rounds per subject (the median is printed)")
	flag.DurationVar(&o.idle, "idle", 20*time.Second, "time connected before the idle RSS and CPU readings")
	flag.StringVar(&o.image, "image", "", "image for the benchmark containers (default: build the test workload image)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	peer, base, image            string
	n, warmup, lifecycle, rounds int
	idle                         time.Duration
}

// subject is one agent under test.
type subject struct {
	name    string
	args    []string // command line
	size    string   // artefact size
	cmd     *exec.Cmd
	peer    *peer
	connect time.Duration
	rows    map[string]string
	logs    []time.Duration
	life    []time.Duration
	lifeErr string
	// logsOnly: the minimal relay, which answers logs commands only.
	logsOnly bool
}

const (
	rowSize      = "artefact size"
	rowConnect   = "start -> identified"
	rowIdleRSS   = "idle RSS"
	rowIdleCPU   = "CPU time while idle"
	rowLogsP50   = "logs p50"
	rowLogsP99   = "logs p99"
	rowOverRelay = "logs p50 over the relay"
	rowLogsCPU   = "agent CPU per logs command"
	rowLifecycle = "lifecycle"
	rowLoadRSS   = "RSS after the load"
)

func run(o options) error {
	work, err := os.MkdirTemp("", "lormas-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	if o.image == "" {
		if o.image, err = workloadImage(ctx, cli); err != nil {
			return err
		}
	}

	var subjects []*subject
	agent := filepath.Join(work, "lormas-agent")
	if err := benchkit.GoBuild(".", agent, "./cmd/lormas-agent"); err != nil {
		return err
	}
	subjects = append(subjects, &subject{name: "lormas-agent", args: []string{agent}, size: sizeOf(agent)})
	relay := filepath.Join(work, "relay")
	if err := benchkit.GoBuild(".", relay, "./scripts/bench/relay"); err != nil {
		return err
	}
	if o.base != "" {
		bin, err := benchkit.BuildAt(work, o.base, "lormas-agent")
		if err != nil {
			return err
		}
		subjects = append(subjects, &subject{name: "lormas-agent @" + benchkit.ShortRev(o.base), args: []string{bin}, size: sizeOf(bin)})
	}
	if o.peer != "" {
		node, err := exec.LookPath("node")
		if err != nil {
			return fmt.Errorf("-peer %s needs node on PATH: %w", o.peer, err)
		}
		if _, err := os.Stat(o.peer); err != nil {
			return fmt.Errorf("-peer: %w", err)
		}
		subjects = append(subjects, &subject{name: "seed agent (node)", args: []string{node, o.peer}, size: sizeOf(o.peer) + " + node " + sizeOf(node)})
	}
	subjects = append(subjects, &subject{name: "minimal relay", args: []string{relay}, size: sizeOf(relay), logsOnly: true})

	srv, err := newServer()
	if err != nil {
		return err
	}
	defer srv.close()

	for i, s := range subjects {
		s.rows = map[string]string{}
		token := "bench-" + benchkit.RandomHex(8)
		s.peer = srv.expect(token)
		s.cmd = exec.Command(s.args[0], s.args[1:]...)
		s.cmd.Env = []string{
			"SERVER_URL=ws://" + srv.addr, "NODE_TOKEN=" + token, "NODE_NAME=bench-" + strconv.Itoa(i),
			"NODE_ID=bench-node-" + strconv.Itoa(i), "HEALTH_ADDR=",
			"STATE_DIR=" + filepath.Join(work, "state-"+strconv.Itoa(i)),
			"VOLUME_ROOTS=" + filepath.Join(work, "volumes"),
			"PATH=" + os.Getenv("PATH"),
		}
		if h := os.Getenv("DOCKER_HOST"); h != "" {
			s.cmd.Env = append(s.cmd.Env, "DOCKER_HOST="+h)
		}
		logFile, err := os.Create(filepath.Join(work, "agent-"+strconv.Itoa(i)+".log"))
		if err != nil {
			return err
		}
		defer logFile.Close()
		s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
		started := time.Now()
		if err := s.cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", s.name, err)
		}
		defer func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() }()
		select {
		case <-s.peer.identified:
			s.connect = time.Since(started)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s did not identify within 30 s", s.name)
		}
		s.rows[rowSize] = s.size
		s.rows[rowConnect] = s.connect.Round(time.Millisecond).String()
	}

	// The logs container: managed (lormas.managed=true, no node label, so
	// every lormas-agent may read it), 100 lines printed.
	logsID := "bench-logs-" + benchkit.RandomHex(4)
	if err := createLogsContainer(ctx, cli, o.image, logsID); err != nil {
		return err
	}
	defer cli.ContainerRemove(context.Background(), logsID, container.RemoveOptions{Force: true})

	fmt.Fprintf(os.Stderr, "bench: %d subjects connected; idle for %v\n", len(subjects), o.idle)
	cpu0 := make([]time.Duration, len(subjects))
	for i, s := range subjects {
		cpu0[i] = benchkit.CPUTime(s.cmd.Process.Pid)
	}
	time.Sleep(o.idle)
	for i, s := range subjects {
		s.rows[rowIdleCPU] = (benchkit.CPUTime(s.cmd.Process.Pid) - cpu0[i]).Round(time.Millisecond).String()
		s.rows[rowIdleRSS] = rss(s.cmd.Process.Pid)
	}

	fmt.Fprintf(os.Stderr, "bench: logs, %d + %d warm-up round trips each\n", o.n, o.warmup)
	var direct []time.Duration
	logsCmd := encode(map[string]any{"action": "logs", "containerId": logsID, "lines": 10})
	cpuLogs := make([]time.Duration, len(subjects))
	for i, s := range subjects {
		cpuLogs[i] = benchkit.CPUTime(s.cmd.Process.Pid)
	}
	for i := 0; i < o.warmup+o.n; i++ {
		// The direct call is the last "subject"; round i starts at i mod
		// (subjects + 1).
		for j := range len(subjects) + 1 {
			k := (i + j) % (len(subjects) + 1)
			if k == len(subjects) {
				t0 := time.Now()
				if err := directLogs(ctx, cli, logsID, 10); err != nil {
					return fmt.Errorf("direct logs: %w", err)
				}
				if d := time.Since(t0); i >= o.warmup {
					direct = append(direct, d)
				}
				continue
			}
			s := subjects[k]
			t0 := time.Now()
			raw, err := s.peer.command(logsCmd, 30*time.Second)
			d := time.Since(t0)
			if err != nil {
				return fmt.Errorf("%s logs: %w", s.name, err)
			}
			if res := decodeResult(raw); res.Status != "success" {
				return fmt.Errorf("%s logs: %s", s.name, res.Error)
			}
			if i >= o.warmup {
				s.logs = append(s.logs, d)
			}
		}
	}
	slices.Sort(direct)
	for i, s := range subjects {
		per := (benchkit.CPUTime(s.cmd.Process.Pid) - cpuLogs[i]) / time.Duration(o.warmup+o.n)
		s.rows[rowLogsCPU] = fmt.Sprintf("%.0f µs", float64(per)/float64(time.Microsecond))
	}

	fmt.Fprintf(os.Stderr, "bench: lifecycle of %d containers at once, %d rounds each\n", o.lifecycle, o.rounds)
	var directLife []time.Duration
	for r := 0; r < o.rounds; r++ {
		d, err := directLifecycle(ctx, cli, o.image, o.lifecycle)
		if err != nil {
			return fmt.Errorf("direct lifecycle: %w", err)
		}
		directLife = append(directLife, d)
		for _, s := range subjects {
			if s.lifeErr != "" || s.logsOnly {
				continue
			}
			d, err := agentLifecycle(ctx, cli, s, o.image, o.lifecycle)
			if err != nil {
				s.lifeErr = strings.SplitN(err.Error(), "\n", 2)[0]
				fmt.Fprintf(os.Stderr, "bench: %s lifecycle: %s\n", s.name, s.lifeErr)
				continue
			}
			s.life = append(s.life, d)
		}
	}
	for _, s := range subjects {
		s.rows[rowLoadRSS] = rss(s.cmd.Process.Pid)
	}

	// The table.
	directP50, directP99 := benchkit.Percentile(direct, 50), benchkit.Percentile(direct, 99)
	directLifeMed := median(directLife)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	header := "\t"
	for _, s := range subjects {
		header += s.name + "\t"
	}
	fmt.Fprintln(tw, header+"direct Docker API\t")
	line := func(name string, cell func(s *subject) string, direct string) {
		l := name + "\t"
		for _, s := range subjects {
			l += cell(s) + "\t"
		}
		fmt.Fprintln(tw, l+direct+"\t")
	}
	ratio := func(d, base time.Duration) string {
		return fmt.Sprintf("%s (%.2fx)", ms(d), float64(d)/float64(base))
	}
	line(rowLogsP50, func(s *subject) string { return ratio(benchkit.Percentile(s.logs, 50), directP50) }, ms(directP50))
	line(rowLogsP99, func(s *subject) string { return ratio(benchkit.Percentile(s.logs, 99), directP99) }, ms(directP99))
	relayP50 := benchkit.Percentile(subjects[len(subjects)-1].logs, 50)
	line(rowOverRelay, func(s *subject) string {
		if s.logsOnly {
			return ""
		}
		p50 := benchkit.Percentile(s.logs, 50)
		return fmt.Sprintf("%+.2f ms (%.2fx)", float64(p50-relayP50)/float64(time.Millisecond), float64(p50)/float64(relayP50))
	}, "")
	line(fmt.Sprintf("%s of %d at once", rowLifecycle, o.lifecycle), func(s *subject) string {
		if s.logsOnly {
			return "(logs only)"
		}
		if len(s.life) == 0 {
			return "failed: " + clip(s.lifeErr, 60)
		}
		return fmt.Sprintf("%s (%.2fx)", sec(median(s.life)), float64(median(s.life))/float64(directLifeMed))
	}, sec(directLifeMed))
	line("  lifecycle rounds", func(s *subject) string { return spread(s.life, sec) }, spread(directLife, sec))
	for _, k := range []string{rowLogsCPU, rowConnect, rowIdleRSS, rowIdleCPU, rowLoadRSS, rowSize} {
		line(k, func(s *subject) string { return s.rows[k] }, "")
	}
	tw.Flush()
	fmt.Printf("\n(%d logs round trips of lines=10 over each agent's own WebSocket after %d warm-up, interleaved in rotating order;\n"+
		" lifecycle: create (no pullPolicy, stopSignal SIGKILL) + start + stop + delete of %d containers at once, median of %d rounds;\n"+
		" idle figures over %v connected; %d CPUs, %s; %s)\n",
		o.n, o.warmup, o.lifecycle, o.rounds, o.idle, benchkit.NumCPU(), engineVersion(ctx, cli), time.Now().UTC().Format("2006-01-02"))
	if o.peer == "" {
		fmt.Println("\nThe seed agent's column is left out: add it with PEER=/path/to/seed/agent.js (run with node).")
	}
	return nil
}

// createLogsContainer runs the workload printing 100 lines, with the
// managed label, and waits until the lines are there.
func createLogsContainer(ctx context.Context, cli *client.Client, img, name string) error {
	_, err := cli.ContainerCreate(ctx, &container.Config{
		Image: img, Cmd: []string{"-lines", "100"},
		Labels: map[string]string{"lormas.managed": "true", "lormas.container": name},
	}, &container.HostConfig{}, nil, nil, name)
	if err != nil {
		return fmt.Errorf("create logs container: %w", err)
	}
	if err := cli.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
		return fmt.Errorf("start logs container: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rc, err := cli.ContainerLogs(ctx, name, container.LogsOptions{ShowStdout: true, Tail: "1"})
		if err == nil {
			var out bytes.Buffer
			_, _ = stdcopy.StdCopy(&out, io.Discard, rc)
			rc.Close()
			if strings.Contains(out.String(), "line 100") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("logs container did not print its 100 lines within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// directLogs is the Docker API call the agent's logs command stands for:
// the last n lines, demultiplexed and split into lines.
func directLogs(ctx context.Context, cli *client.Client, name string, n int) error {
	rc, err := cli.ContainerLogs(ctx, name, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(n)})
	if err != nil {
		return err
	}
	defer rc.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, rc); err != nil {
		return err
	}
	if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != n {
		return fmt.Errorf("got %d lines, want %d", len(lines), n)
	}
	return nil
}

func directLifecycle(ctx context.Context, cli *client.Client, img string, n int) (time.Duration, error) {
	prefix := "bench-direct-" + benchkit.RandomHex(3)
	defer removeByPrefix(ctx, cli, prefix)
	return atOnce(n, func(i int) error {
		name := fmt.Sprintf("%s-%d", prefix, i)
		c, err := cli.ContainerCreate(ctx, &container.Config{Image: img, StopSignal: "SIGKILL", Labels: map[string]string{"lormas.bench": "true"}},
			&container.HostConfig{}, nil, nil, name)
		if err != nil {
			return err
		}
		if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			return err
		}
		if err := cli.ContainerStop(ctx, c.ID, container.StopOptions{}); err != nil {
			return err
		}
		return cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	})
}

func agentLifecycle(ctx context.Context, cli *client.Client, s *subject, img string, n int) (time.Duration, error) {
	prefix := "bench-" + benchkit.RandomHex(3)
	defer removeByPrefix(ctx, cli, prefix)
	return atOnce(n, func(i int) error {
		id := fmt.Sprintf("%s-%d", prefix, i)
		for _, c := range []map[string]any{
			{"action": "create", "containerId": id, "eggConfig": map[string]any{"image": img, "stopSignal": "SIGKILL"}},
			{"action": "start", "containerId": id},
			{"action": "stop", "containerId": id},
			{"action": "delete", "containerId": id},
		} {
			raw, err := s.peer.command(encode(c), 2*time.Minute)
			if err != nil {
				return fmt.Errorf("%s: %w", c["action"], err)
			}
			if res := decodeResult(raw); res.Status != "success" {
				return fmt.Errorf("%s: %s", c["action"], clip(res.Error, 200))
			}
		}
		return nil
	})
}

// removeByPrefix removes the containers a lifecycle round left behind when
// it failed half-way.
func removeByPrefix(ctx context.Context, cli *client.Client, prefix string) {
	list, _ := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("name", prefix))})
	for _, c := range list {
		_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
}

// atOnce runs f(0..n-1) concurrently and returns the time until all ended.
func atOnce(n int, f func(i int) error) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, n)
	t0 := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

// server is the benchmark's stand-in for the control server: it accepts
// every token it was told to expect, sends commands and matches their
// results.
type server struct {
	addr string
	ln   net.Listener
	hs   *http.Server
	up   *gws.Upgrader

	mu    sync.Mutex
	peers map[string]*peer
}

// peer is one connected agent.
type peer struct {
	identified chan struct{}
	once       sync.Once
	conn       atomic.Pointer[gws.Conn]
	seq        atomic.Int64

	mu      sync.Mutex
	waiting map[string]chan []byte
}

type result struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
	Status    string `json:"status"`
	Error     string `json:"error"`
}

func newServer() (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{addr: ln.Addr().String(), ln: ln, peers: map[string]*peer{}}
	s.up = gws.NewUpgrader(s, &gws.ServerOption{ReadMaxPayloadSize: 64 << 20, Recovery: gws.Recovery})
	mux := http.NewServeMux()
	mux.HandleFunc("/api/ws/nodes", s.handle)
	s.hs = &http.Server{Handler: mux}
	go func() { _ = s.hs.Serve(ln) }()
	return s, nil
}

func (s *server) close() { _ = s.hs.Close() }

func (s *server) expect(token string) *peer {
	p := &peer{identified: make(chan struct{}), waiting: map[string]chan []byte{}}
	s.mu.Lock()
	s.peers[token] = p
	s.mu.Unlock()
	return p
}

func (s *server) handle(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		token = r.URL.Query().Get("token")
	}
	s.mu.Lock()
	p := s.peers[token]
	s.mu.Unlock()
	if p == nil {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	conn, err := s.up.Upgrade(w, r)
	if err != nil {
		return
	}
	conn.Session().Store("peer", p)
	p.conn.Store(conn)
	go conn.ReadLoop()
}

func peerOf(c *gws.Conn) *peer {
	v, _ := c.Session().Load("peer")
	return v.(*peer)
}

func (s *server) OnOpen(*gws.Conn)             {}
func (s *server) OnClose(*gws.Conn, error)     {}
func (s *server) OnPing(c *gws.Conn, b []byte) { _ = c.WritePong(b) }
func (s *server) OnPong(*gws.Conn, []byte)     {}

// OnMessage hands a command_result to its waiting command with as little
// work as possible on the way (the harness's own cost is in every round
// trip it measures): the id is found by a scan, the result decoded by the
// caller after its clock stopped.
func (s *server) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	p := peerOf(c)
	b := m.Bytes()
	if id := stringField(b, "commandId"); id != "" && bytes.Contains(b, []byte(`"type":"command_result"`)) {
		p.mu.Lock()
		ch := p.waiting[id]
		delete(p.waiting, id)
		p.mu.Unlock()
		if ch != nil {
			ch <- bytes.Clone(b)
		}
		return
	}
	if bytes.Contains(b, []byte(`"type":"agent_identify"`)) {
		p.once.Do(func() { close(p.identified) })
	}
}

// stringField finds "name":"value" in a JSON object and returns value
// (without unescaping: the ids here are plain).
func stringField(b []byte, name string) string {
	key := []byte(`"` + name + `":"`)
	i := bytes.Index(b, key)
	if i < 0 {
		return ""
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// encode turns a command's fields into the body command sends.
func encode(cmd map[string]any) []byte {
	b, err := json.Marshal(cmd)
	if err != nil {
		panic(err)
	}
	return b
}

// command sends a command (body: its fields as a JSON object, without type
// and id) and waits for its result, which it returns raw.
func (p *peer) command(body []byte, timeout time.Duration) ([]byte, error) {
	id := "c" + strconv.FormatInt(p.seq.Add(1), 10)
	frame := make([]byte, 0, len(body)+40)
	frame = append(frame, `{"type":"command","id":"`...)
	frame = append(frame, id...)
	frame = append(frame, `",`...)
	frame = append(frame, body[1:]...)
	ch := make(chan []byte, 1)
	p.mu.Lock()
	p.waiting[id] = ch
	p.mu.Unlock()
	if err := p.conn.Load().WriteMessage(gws.OpcodeText, frame); err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-t.C:
		p.mu.Lock()
		delete(p.waiting, id)
		p.mu.Unlock()
		return nil, fmt.Errorf("no result within %v", timeout)
	}
}

// decodeResult reads a command_result's status and error.
func decodeResult(raw []byte) result {
	var r result
	if err := json.Unmarshal(raw, &r); err != nil {
		r.Status, r.Error = "undecodable", err.Error()
	}
	return r
}

func median(ds []time.Duration) time.Duration { return benchkit.Percentile(ds, 50) }

func spread(ds []time.Duration, f func(time.Duration) string) string {
	if len(ds) == 0 {
		return ""
	}
	s := slices.Sorted(slices.Values(ds))
	return f(s[0]) + " .. " + f(s[len(s)-1])
}

func ms(d time.Duration) string  { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
func sec(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// rss reads VmRSS of pid from /proc.
func rss(pid int) string {
	kib := benchkit.RSSKiB(pid)
	if kib == 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

func sizeOf(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(st.Size())/(1<<20))
}

func engineVersion(ctx context.Context, cli *client.Client) string {
	v, err := cli.ServerVersion(ctx)
	if err != nil {
		return "Docker Engine ?"
	}
	return "Docker Engine " + v.Version + ", API " + cli.ClientVersion()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// workloadImage builds the test workload image through `go test` (which
// reuses it when its source is unchanged) and returns the newest tag of it.
func workloadImage(ctx context.Context, cli *client.Client) (string, error) {
	cmd := exec.Command("go", "test", "-count=1", "-run", "TestWorkloadImage", "./internal/dockertest/")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build workload image: %v\n%s", err, out)
	}
	imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "lormas-test-workload"))})
	if err != nil || len(imgs) == 0 || len(imgs[0].RepoTags) == 0 {
		return "", fmt.Errorf("workload image not found after building it (%v)", err)
	}
	slices.SortFunc(imgs, func(a, b image.Summary) int { return int(b.Created - a.Created) })
	return imgs[0].RepoTags[0], nil
}
