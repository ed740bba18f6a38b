// Command fleet measures lormas-server under a simulated fleet: agents as
// goroutines in this process, each with its own WebSocket connection on
// loopback, identifying, sending heartbeats and answering commands at
// once, while commands are dispatched through the REST API at a steady
// rate. It prints a table, with lormas-server built from an earlier git
// revision in the same run when -base is given.
//
//	go run ./scripts/fleet [-base REV] [-agents N] [-heartbeats 5000] [-commands 200] [-duration 30s] [-server-env K=V ...]
//
// A process holds at most RLIMIT_NOFILE descriptors (20,000 on the machine
// this was written on), which caps the connections of the server and of
// this driver alike: -agents is cut to fit. The load of a larger fleet is
// simulated by sending heartbeats faster: -heartbeats is the total rate,
// 5,000/s being 50,000 agents at the default 10 s interval. Connections
// are spread over source addresses 127.0.0.2, 127.0.0.3, ... (10,000 each)
// so that ephemeral ports never run out.
//
// Measured per server: time to connect the fleet, RSS before and with the
// fleet (and the difference per agent), heartbeats per second received,
// dispatch latency (POST /api/nodes/{id}/commands to a random connected
// agent, p50/p99), GET /api/nodes in full and one page of it, and the
// server's CPU time during the measured window.
//
// The servers run with a fixed environment, not this process's; -server-env
// adds to it (repeatable), e.g. -server-env GODEBUG=gctrace=1 to see the
// server's collections on stderr, or GOGC / GOMEMLIMIT to try pacing.
//
// The nodes are created once through the first server; the second runs on
// a copy of its data directory (same schema, same token key).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/scripts/internal/benchkit"
)

type options struct {
	base       string
	agents     int
	heartbeats int
	commands   int
	duration   time.Duration
	warmup     time.Duration
	serverEnv  envList
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }

func (e *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

func main() {
	var o options
	flag.StringVar(&o.base, "base", os.Getenv("BASE"), "also measure lormas-server built from this git revision (also BASE)")
	flag.IntVar(&o.agents, "agents", 19000, "simulated agents (cut to what the file limit allows)")
	flag.IntVar(&o.heartbeats, "heartbeats", 5000, "heartbeats per second in total (5000 = 50,000 agents at 10 s)")
	flag.IntVar(&o.commands, "commands", 200, "commands per second dispatched through the REST API")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured window")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "load before the measured window")
	flag.Var(&o.serverEnv, "server-env", "KEY=VALUE added to the servers' environment (repeatable)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// server is one lormas-server build under test.
type server struct {
	name string
	bin  string
	rows map[string]string
}

const (
	rowAgents     = "agents connected"
	rowConnect    = "time to connect them"
	rowHeartbeats = "heartbeats sent/s"
	rowP50        = "dispatch p50"
	rowP99        = "dispatch p99"
	rowDispatched = "commands answered / sent"
	rowRSSIdle    = "RSS without agents"
	rowRSSFleet   = "RSS with the fleet"
	rowPerAgent   = "memory per connected agent"
	rowListAll    = "GET /api/nodes (all)"
	rowListPage   = "GET /api/nodes?limit=100"
	rowCPU        = "server CPU in the window"
)

func run(o options) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if lim.Cur < lim.Max {
			lim.Cur = lim.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
			_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
		if max := int(lim.Cur) - 1000; o.agents > max {
			fmt.Fprintf(os.Stderr, "fleet: the file limit (%d) allows %d agents, not %d\n", lim.Cur, max, o.agents)
			o.agents = max
		}
	}
	work, err := os.MkdirTemp("", "lormas-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var servers []*server
	if o.base != "" {
		bin, err := benchkit.BuildAt(work, o.base, "lormas-server")
		if err != nil {
			return err
		}
		servers = append(servers, &server{name: "lormas-server @" + benchkit.ShortRev(o.base), bin: bin})
	}
	bin := filepath.Join(work, "lormas-server")
	if err := benchkit.GoBuild(".", bin, "./cmd/lormas-server"); err != nil {
		return err
	}
	servers = append(servers, &server{name: "lormas-server", bin: bin})

	admin := benchkit.RandomHex(16)
	seed := filepath.Join(work, "seed-data")
	var nodes []node
	for i, s := range servers {
		s.rows = map[string]string{}
		data := filepath.Join(work, fmt.Sprintf("data-%d", i))
		if i == 0 {
			data = seed
		} else if err := exec.Command("cp", "-a", seed, data).Run(); err != nil {
			return fmt.Errorf("copy the data directory: %w", err)
		}
		p, err := startServer(s.bin, data, admin, o.serverEnv)
		if err != nil {
			return err
		}
		if i == 0 {
			fmt.Fprintf(os.Stderr, "fleet: creating %d nodes\n", o.agents)
			if nodes, err = createNodes(p.api, o.agents); err != nil {
				p.stop()
				return err
			}
			// Start again, so both servers begin from a database read from
			// disk and an empty heap.
			p.stop()
			if p, err = startServer(s.bin, data, admin, o.serverEnv); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "fleet: %s\n", s.name)
		err = measure(o, s, p, nodes)
		p.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	header := "\t"
	for _, s := range servers {
		header += s.name + "\t"
	}
	fmt.Fprintln(tw, header)
	for _, k := range []string{rowAgents, rowConnect, rowHeartbeats, rowP50, rowP99, rowDispatched, rowRSSIdle, rowRSSFleet, rowPerAgent, rowListAll, rowListPage, rowCPU} {
		line := k + "\t"
		for _, s := range servers {
			line += s.rows[k] + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Printf("\n(%d agents on loopback in one process, %d heartbeats/s in all = %d agents at the 10 s interval;\n"+
		" %d commands/s through POST /api/nodes/{id}/commands for %v after %v of load; NODE_TOKEN_TTL=24h;\n"+
		" %d CPUs shared by the server and this driver; %s)\n",
		o.agents, o.heartbeats, o.heartbeats*10, o.commands, o.duration, o.warmup, benchkit.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	return nil
}

type node struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// proc is a running server.
type proc struct {
	cmd  *exec.Cmd
	addr string
	api  *api
}

func startServer(bin, data, admin string, extraEnv []string) (*proc, error) {
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"LISTEN_ADDR=" + addr, "DATA_DIR=" + data, "ADMIN_TOKEN=" + admin, "LOG_LEVEL=warn",
		"NODE_TOKEN_TTL=24h", "PATH=" + os.Getenv("PATH")}
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, addr: addr, api: newAPI("http://"+addr, admin)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := p.api.get("/healthz"); err == nil {
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, errors.New("server did not start within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func createNodes(a *api, n int) ([]node, error) {
	nodes := make([]node, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				body, err := a.post("/api/nodes", map[string]string{"name": fmt.Sprintf("fleet-%05d", i)})
				if err == nil {
					err = json.Unmarshal(body, &nodes[i])
				}
				if err != nil {
					firstErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, fmt.Errorf("create nodes: %w", err)
	}
	return nodes, nil
}

// agent is one simulated agent.
type agent struct {
	node      node
	conn      *gws.Conn
	heartbeat []byte
}

// fleet receives the agents' WebSocket events.
type fleet struct {
	identify []byte
	results  atomic.Int64
}

func (f *fleet) OnOpen(c *gws.Conn)           { _ = c.WriteMessage(gws.OpcodeText, f.identify) }
func (f *fleet) OnClose(*gws.Conn, error)     {}
func (f *fleet) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (f *fleet) OnPong(*gws.Conn, []byte)     {}

// OnMessage answers pings and commands with as little work as it can: the
// driver shares the CPUs with the server it measures, and its own garbage
// collections (19,000 connections' worth of heap) delay its answers as the
// server's would. The server's frames are its own compact JSON, so the
// type and the command id are found by a scan, not decoded.
func (f *fleet) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	switch {
	case bytes.Equal(b, pingFrame):
		_ = c.WriteMessage(gws.OpcodeText, pongFrame)
	case bytes.Contains(b, []byte(`"type":"command"`)):
		id := stringField(b, "id")
		res := make([]byte, 0, len(resultHead)+len(id)+len(resultTail))
		res = append(append(append(res, resultHead...), id...), resultTail...)
		_ = c.WriteMessage(gws.OpcodeText, res)
		f.results.Add(1)
	}
}

var (
	pingFrame  = []byte(`{"type":"ping"}`)
	pongFrame  = []byte(`{"type":"pong"}`)
	resultHead = []byte(`{"type":"command_result","commandId":"`)
	resultTail = []byte(`","status":"success","result":{"containers":[]}}`)
)

// stringField finds "name":"value" in a JSON object and returns value as
// written (the server's command ids need no unescaping).
func stringField(b []byte, name string) []byte {
	key := []byte(`"` + name + `":"`)
	i := bytes.Index(b, key)
	if i < 0 {
		return nil
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

func measure(o options, s *server, p *proc, nodes []node) error {
	pid := p.cmd.Process.Pid
	time.Sleep(2 * time.Second)
	rssIdle := benchkit.RSSKiB(pid)
	s.rows[rowRSSIdle] = mib(rssIdle)

	f := &fleet{identify: []byte(`{"type":"agent_identify","nodeName":"fleet","version":"sim","protocolVersion":1,"capabilities":[]}`)}
	agents := make([]*agent, len(nodes))
	var wg sync.WaitGroup
	var next atomic.Int64
	var dialErrs atomic.Int64
	var lastErr atomic.Value
	t0 := time.Now()
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(nodes) {
					return
				}
				a, err := dialAgent(f, p.addr, nodes[i], i)
				if err != nil {
					dialErrs.Add(1)
					lastErr.Store(err)
					continue
				}
				agents[i] = a
			}
		}()
	}
	wg.Wait()
	var up []*agent
	for _, a := range agents {
		if a != nil {
			up = append(up, a)
		}
	}
	defer func() {
		for _, a := range up {
			_ = a.conn.NetConn().Close()
		}
	}()
	s.rows[rowConnect] = time.Since(t0).Round(100 * time.Millisecond).String()
	s.rows[rowAgents] = strconv.Itoa(len(up))
	if n := dialErrs.Load(); n > 0 {
		s.rows[rowAgents] += fmt.Sprintf(" (%d failed: %v)", n, lastErr.Load())
	}
	if len(up) == 0 {
		return errors.New("no agent connected")
	}

	// Heartbeats at the total rate, from 4 workers each pacing its share.
	stop := make(chan struct{})
	var sent atomic.Int64
	var hbWG sync.WaitGroup
	const workers = 4
	for w := 0; w < workers; w++ {
		hbWG.Add(1)
		go func() {
			defer hbWG.Done()
			mine := up[w*len(up)/workers : (w+1)*len(up)/workers]
			perTick := float64(o.heartbeats) / workers / 100 // every 10 ms
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			credit, j := 0.0, 0
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for credit += perTick; credit >= 1; credit-- {
					a := mine[j%len(mine)]
					j++
					if a.conn.WriteMessage(gws.OpcodeText, a.heartbeat) == nil {
						sent.Add(1)
					}
				}
			}
		}()
	}
	defer func() { close(stop); hbWG.Wait() }()

	time.Sleep(o.warmup)
	rssFleet := benchkit.RSSKiB(pid)
	s.rows[rowRSSFleet] = mib(rssFleet)
	s.rows[rowPerAgent] = fmt.Sprintf("%.1f KiB", float64(rssFleet-rssIdle)/float64(len(up)))

	// Dispatch at a steady rate for the window.
	cpu0, self0 := benchkit.CPUTime(pid), benchkit.CPUTime(os.Getpid())
	sent0 := sent.Load()
	w0 := time.Now()
	var lmu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	var cmdWG sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(o.commands))
	end := time.After(o.duration)
	issued := 0
loop:
	for {
		select {
		case <-end:
			break loop
		case <-tick.C:
		}
		a := up[mrand.IntN(len(up))]
		issued++
		cmdWG.Add(1)
		go func() {
			defer cmdWG.Done()
			t := time.Now()
			body, err := p.api.post("/api/nodes/"+a.node.ID+"/commands", map[string]any{"action": "list"})
			d := time.Since(t)
			if err != nil || !bytes.Contains(body, []byte(`"success"`)) {
				failed.Add(1)
				return
			}
			lmu.Lock()
			lat = append(lat, d)
			lmu.Unlock()
		}()
	}
	tick.Stop()
	cmdWG.Wait()
	window := time.Since(w0)
	s.rows[rowCPU] = (benchkit.CPUTime(pid) - cpu0).Round(10 * time.Millisecond).String()
	fmt.Fprintf(os.Stderr, "fleet: the driver used %v of CPU in the window and holds %s\n",
		(benchkit.CPUTime(os.Getpid()) - self0).Round(10*time.Millisecond), mib(benchkit.RSSKiB(os.Getpid())))
	s.rows[rowHeartbeats] = fmt.Sprintf("%.0f", float64(sent.Load()-sent0)/window.Seconds())
	s.rows[rowP50] = ms(benchkit.Percentile(lat, 50))
	s.rows[rowP99] = ms(benchkit.Percentile(lat, 99))
	s.rows[rowDispatched] = fmt.Sprintf("%d / %d", len(lat), issued)
	if n := failed.Load(); n > 0 {
		s.rows[rowDispatched] += fmt.Sprintf(" (%d failed)", n)
	}

	// The node list, in full and one page, under the same load.
	t := time.Now()
	body, err := p.api.get("/api/nodes")
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	s.rows[rowListAll] = fmt.Sprintf("%s, %.1f MB", ms(time.Since(t)), float64(len(body))/1e6)
	t = time.Now()
	page, link, err := p.api.getPage("/api/nodes?limit=100")
	switch {
	case err != nil:
		return fmt.Errorf("list a page of nodes: %w", err)
	case link == "":
		s.rows[rowListPage] = "not paginated"
	default:
		s.rows[rowListPage] = fmt.Sprintf("%s, %.1f kB", ms(time.Since(t)), float64(len(page))/1e3)
	}
	return nil
}

func dialAgent(f *fleet, addr string, n node, i int) (*agent, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, byte((2+i/10000)>>8), byte(2+i/10000))}
	conn, _, err := gws.NewClient(f, &gws.ClientOption{
		Addr:          "ws://" + addr + "/api/ws/nodes",
		RequestHeader: http.Header{"Authorization": {"Bearer " + n.Token}},
		NewDialer: func() (gws.Dialer, error) {
			return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: src}, nil
		},
		HandshakeTimeout: 30 * time.Second,
		// The server sends pings and commands of a few hundred bytes; a
		// small buffer keeps the driver's heap (and its collections) small.
		ReadBufferSize: 1 << 10,
	})
	if err != nil {
		return nil, err
	}
	hb, _ := json.Marshal(map[string]any{
		"type": "heartbeat", "nodeId": n.ID, "timestamp": time.Now().UTC().Format(time.RFC3339Nano),
		"resources": map[string]any{
			"cpu": 0.12, "memory": "1.2GB", "cpuCores": 8, "memoryUsedBytes": 1288490188, "memoryTotalBytes": 16777216000,
			"diskUsedBytes": 53687091200, "diskTotalBytes": 214748364800, "load1": 0.42, "load5": 0.37, "load15": 0.31,
			"uptimeSeconds": 864000, "containers": map[string]int{"running": 5, "total": 7},
		},
	})
	go conn.ReadLoop()
	return &agent{node: n, conn: conn, heartbeat: hb}, nil
}

type api struct {
	base, token string
	hc          *http.Client
}

func newAPI(base, token string) *api {
	return &api{base: base, token: token, hc: &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
	}}
}

func (a *api) do(method, path string, body any) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	return raw, resp.Header, nil
}

func (a *api) get(path string) ([]byte, error) {
	b, _, err := a.do(http.MethodGet, path, nil)
	return b, err
}

func (a *api) getPage(path string) ([]byte, string, error) {
	b, h, err := a.do(http.MethodGet, path, nil)
	return b, h.Get("Link"), err
}

func (a *api) post(path string, body any) ([]byte, error) {
	b, _, err := a.do(http.MethodPost, path, body)
	return b, err
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }
