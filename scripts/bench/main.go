// Command bench measures lormas-agent against the seed's TypeScript agent
// (../shared/peers/seed-ts-agent/agent.js, run with node) in one run, on this
// host, through the same lormas-server and the same Docker Engine, and
// prints a table. Both agents serve the same container (created once through
// lormas-agent: the seed agent cannot create without a registry).
//
//	go run ./scripts/bench [-n 300] [-c 8] [-idle 60s] [-peer path/to/agent.js]
//
// Measured: artefact size, time from process start to "connected" on the
// server, idle RSS after -idle, `logs` command round-trip latency through the
// server (sequential, p50/p95/p99), throughput with -c concurrent clients,
// and RSS after the load.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"text/tabwriter"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

func main() {
	n := flag.Int("n", 300, "sequential logs commands per agent")
	conc := flag.Int("c", 8, "concurrent clients for the throughput run")
	perClient := flag.Int("per-client", 50, "commands per concurrent client")
	idle := flag.Duration("idle", 60*time.Second, "time connected before the idle RSS reading")
	peer := flag.String("peer", "../shared/peers/seed-ts-agent/agent.js", "the seed agent's bundled agent.js")
	img := flag.String("image", "", "image for the benchmark container (default: build the test workload image)")
	flag.Parse()
	if err := run(*n, *conc, *perClient, *idle, *peer, *img); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type subject struct {
	name     string
	artefact string
	cmd      *exec.Cmd
	node     node
	started  time.Time
	connect  time.Duration
	rows     map[string]string
}

type node struct {
	ID        string `json:"id"`
	Token     string `json:"token"`
	Connected bool   `json:"connected"`
}

func run(n, conc, perClient int, idle time.Duration, peer, imageRef string) error {
	work, err := os.MkdirTemp("", "lormas-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	for _, b := range []string{"lormas-agent", "lormas-server"} {
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=bench", "-o", filepath.Join(work, b), "./cmd/"+b)
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build %s: %w", b, err)
		}
	}
	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	if imageRef == "" {
		img, err := workloadImage(ctx, cli)
		if err != nil {
			return err
		}
		imageRef = img
	}

	addr, err := freeAddr()
	if err != nil {
		return err
	}
	admin := randomHex(16)
	srv := exec.Command(filepath.Join(work, "lormas-server"))
	srv.Env = []string{"LISTEN_ADDR=" + addr, "DATA_DIR=" + filepath.Join(work, "data"), "ADMIN_TOKEN=" + admin, "LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH")}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Process.Kill()
	api := &api{base: "http://" + addr, token: admin}
	if err := waitFor(30*time.Second, func() bool { _, err := api.nodes(); return err == nil }); err != nil {
		return fmt.Errorf("server did not start: %w", err)
	}

	subjects := []*subject{{name: "lormas-agent (Go)", artefact: filepath.Join(work, "lormas-agent")}}
	if _, err := os.Stat(peer); err == nil {
		if _, err := exec.LookPath("node"); err == nil {
			subjects = append(subjects, &subject{name: "seed agent (Node.js)", artefact: peer})
		}
	}
	if len(subjects) == 1 {
		fmt.Fprintln(os.Stderr, "bench: the seed agent or node is missing; measuring lormas-agent alone")
	}
	for i, s := range subjects {
		s.rows = map[string]string{}
		s.node, err = api.createNode(fmt.Sprintf("bench-%d-%s", i, randomHex(3)))
		if err != nil {
			return err
		}
		env := []string{"SERVER_URL=ws://" + addr, "NODE_TOKEN=" + s.node.Token, "NODE_NAME=bench", "LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH"), "HEALTH_ADDR=", "STATE_DIR=" + filepath.Join(work, "state")}
		if strings.HasSuffix(s.artefact, ".js") {
			s.cmd = exec.Command("node", s.artefact)
		} else {
			s.cmd = exec.Command(s.artefact)
		}
		s.cmd.Env = env
		s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
		s.started = time.Now()
		if err := s.cmd.Start(); err != nil {
			return err
		}
		defer s.cmd.Process.Kill()
		if err := waitFor(30*time.Second, func() bool { nd, err := api.node(s.node.ID); return err == nil && nd.Connected }); err != nil {
			return fmt.Errorf("%s did not connect: %w", s.name, err)
		}
		s.connect = time.Since(s.started)
	}

	// Containers created and started through lormas-agent (the seed agent
	// cannot create without a registry); both agents read their logs.
	cids := make([]string, conc)
	for i := range cids {
		cids[i] = fmt.Sprintf("bench-%s-%d", randomHex(3), i)
		defer cli.ContainerRemove(ctx, cids[i], container.RemoveOptions{Force: true})
		for _, c := range []map[string]any{
			{"action": "create", "containerId": cids[i], "eggConfig": map[string]any{"image": imageRef, "command": []string{"-lines", "200"}, "pullPolicy": "never", "tty": false}},
			{"action": "start", "containerId": cids[i]},
		} {
			if r, err := api.command(subjects[0].node.ID, c); err != nil || r.Status != "success" {
				return fmt.Errorf("%v: %+v %v", c["action"], r, err)
			}
		}
	}
	cid := cids[0]

	fmt.Fprintf(os.Stderr, "bench: connected; waiting %v for the idle RSS reading\n", idle)
	cpu0 := make([]time.Duration, len(subjects))
	for i, s := range subjects {
		cpu0[i] = cpuTime(s.cmd.Process.Pid)
	}
	time.Sleep(idle)
	for i, s := range subjects {
		s.rows["CPU time while idle"] = (cpuTime(s.cmd.Process.Pid) - cpu0[i]).Round(time.Millisecond).String()
	}
	for _, s := range subjects {
		s.rows["artefact size"] = sizeOf(s.artefact)
		s.rows["with its runtime"] = s.rows["artefact size"] + " (static)"
		if node, err := exec.LookPath("node"); err == nil && strings.HasSuffix(s.artefact, ".js") {
			s.rows["with its runtime"] = sizeOf(s.artefact, node) + " (+ node)"
		}
		s.rows["start -> connected"] = s.connect.Round(time.Millisecond).String()
		s.rows["idle RSS"] = rss(s.cmd.Process.Pid)
	}

	logs := map[string]any{"action": "logs", "containerId": cid, "lines": 100}
	for _, s := range subjects {
		var lat []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			r, err := api.command(s.node.ID, logs)
			if err != nil || r.Status != "success" {
				return fmt.Errorf("%s logs: %+v %v", s.name, r, err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		s.rows["logs RTT p50"] = pct(lat, 50)
		s.rows["logs RTT p95"] = pct(lat, 95)
		s.rows["logs RTT p99"] = pct(lat, 99)

		for _, spread := range []bool{false, true} {
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failed error
			t0 := time.Now()
			for c := 0; c < conc; c++ {
				cmd := logs
				if spread {
					cmd = map[string]any{"action": "logs", "containerId": cids[c], "lines": 100}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < perClient; i++ {
						if r, err := api.command(s.node.ID, cmd); err != nil || r.Status != "success" {
							mu.Lock()
							failed = errors.Join(failed, fmt.Errorf("%+v %v", r, err))
							mu.Unlock()
							return
						}
					}
				}()
			}
			wg.Wait()
			if failed != nil {
				return fmt.Errorf("%s concurrent logs: %w", s.name, failed)
			}
			s.rows[throughputRow(conc, spread)] = strconv.FormatFloat(float64(conc*perClient)/time.Since(t0).Seconds(), 'f', 0, 64)
		}
		s.rows["RSS after load"] = rss(s.cmd.Process.Pid)
	}

	order := []string{"artefact size", "with its runtime", "start -> connected", "idle RSS", "CPU time while idle", "logs RTT p50", "logs RTT p95", "logs RTT p99", throughputRow(conc, false), throughputRow(conc, true), "RSS after load"}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	header := "metric\t"
	for _, s := range subjects {
		header += s.name + "\t"
	}
	fmt.Fprintln(tw, header)
	for _, k := range order {
		line := k + "\t"
		for _, s := range subjects {
			line += s.rows[k] + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Printf("\n(logs of 100 lines through lormas-server's REST API; %d sequential, %d clients x %d concurrent;\n idle RSS after %v connected; host %d CPUs; lormas-agent orders one container's commands, the seed agent does not)\n", n, conc, perClient, idle, numCPU())
	return nil
}

func pct(sorted []time.Duration, p int) string {
	i := (len(sorted)*p + 99) / 100
	if i > 0 {
		i--
	}
	return sorted[i].Round(10 * time.Microsecond).String()
}

// rss reads VmRSS of pid from /proc.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.Atoi(f[1])
			return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
	}
	return "?"
}

// cpuTime reads the user+system CPU time of pid from /proc/<pid>/stat.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func sizeOf(paths ...string) string {
	var total int64
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return "?"
		}
		total += st.Size()
	}
	return fmt.Sprintf("%.1f MiB", float64(total)/(1<<20))
}

// throughputRow names a concurrent run: all clients on one container (the
// agent runs one container's commands in order) or one container each.
func throughputRow(conc int, spread bool) string {
	if spread {
		return fmt.Sprintf("logs/s, %d clients, own containers", conc)
	}
	return fmt.Sprintf("logs/s, %d clients, one container", conc)
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
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

type api struct{ base, token string }

type result struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

func (a *api) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (a *api) nodes() ([]node, error) {
	var ns []node
	return ns, a.do("GET", "/api/nodes", nil, &ns)
}

func (a *api) node(id string) (node, error) {
	var n node
	return n, a.do("GET", "/api/nodes/"+id, nil, &n)
}

func (a *api) createNode(name string) (node, error) {
	var n node
	return n, a.do("POST", "/api/nodes", map[string]string{"name": name}, &n)
}

func (a *api) command(id string, cmd map[string]any) (result, error) {
	var r result
	return r, a.do("POST", "/api/nodes/"+id+"/commands", cmd, &r)
}
