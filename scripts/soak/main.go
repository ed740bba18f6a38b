// Command soak drives lormas-agent for minutes under load and faults and
// prints a table (scripts/soak.sh; not part of CI):
//
//	go run ./scripts/soak [-duration 5m] [-rate 20] [-containers 8] [-fault-every 20s-40s] [-halfopen 70s]
//
// It builds the agent, runs it as a process against an in-process server
// (which resends unanswered commands after every identify, as the
// reference server does) through a TCP proxy that plays the network, with
// DOCKER_HOST pointing at a unix-socket proxy to the real daemon that the
// soak can cut. The server sends -rate commands a second (start, stop,
// restart, kill, logs, inspect, list, stats) over -containers managed
// containers of the test workload, and one fault every -fault-every, in
// turn:
//
//   - close: the server closes the connection;
//   - refuse: the server refuses upgrades (503) for 5 s, after closing;
//   - malformed: malformed JSON, an invalid command, a binary frame, then
//     a 2 MiB frame (over MAX_MESSAGE_BYTES: the agent closes with 1009);
//   - unmanaged: containers without the agent's labels (and one of another
//     node) appear, start and stop; commands on them must be forbidden and
//     none of their events relayed;
//   - docker: the Docker Engine is unreachable for 15 s (the proxy socket
//     is cut): commands must be answered unavailable without hanging;
//   - halfopen: the network forwards nothing for -halfopen (longer than
//     the agent's 60 s keepalive), then cuts the connection, losing what it
//     held.
//
// A replay probe sends the first start of a dedicated container again
// every 30 s, after stopping the container: a repeat of an id is never
// executed again, however old.
//
// The table: commands, lost (no result at the end), duplicate results (the
// same result sent again after a reconnect: tolerated), re-executed (a
// command id run twice, from the agent's own log, and replays that started
// the probe container), container events missing (published by the daemon
// for a managed container, read directly from the Docker API, while the
// agent was connected and could read it, and never relayed by the end of
// the run: an event relayed late, after a reconnect or once the events
// stream is back after a Docker outage, counts as delivered), the agent's
// own counters (ids forgotten, results evicted and sent again, events
// dropped, inventories), and the agent's RSS, open file descriptors and
// goroutines with their slopes after warm-up.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/scripts/internal/benchkit"
)

type options struct {
	duration       time.Duration
	rate           int
	containers     int
	faultMin       time.Duration
	faultMax       time.Duration
	halfOpen       time.Duration
	dockerDown     time.Duration
	resultStore    string
	drain          time.Duration
	sample         time.Duration
	warmup         time.Duration
	keep           bool
	faultsDisabled bool
	maxOutstanding int
}

func main() {
	o := options{}
	var faultEvery string
	flag.DurationVar(&o.duration, "duration", 5*time.Minute, "how long the load runs")
	flag.IntVar(&o.rate, "rate", 20, "commands a second")
	flag.IntVar(&o.containers, "containers", 8, "managed containers")
	flag.StringVar(&faultEvery, "fault-every", "20s-40s", "pause before each fault: a duration or a range")
	flag.DurationVar(&o.halfOpen, "halfopen", 70*time.Second, "how long the network forwards nothing in the half-open fault")
	flag.DurationVar(&o.dockerDown, "docker-down", 15*time.Second, "how long the Docker Engine is unreachable")
	flag.StringVar(&o.resultStore, "result-store", "", "RESULT_STORE_BYTES for the agent (default: the agent's)")
	flag.DurationVar(&o.drain, "drain", 2*time.Minute, "after the load: how long to wait for the last results")
	flag.DurationVar(&o.sample, "sample", 5*time.Second, "resource sampling interval")
	flag.DurationVar(&o.warmup, "warmup", 0, "samples before this are left out of the slopes (default: a fifth of -duration)")
	flag.BoolVar(&o.faultsDisabled, "no-faults", false, "load only")
	flag.IntVar(&o.maxOutstanding, "max-outstanding", 4, "commands a container may have without a result before the server waits (as a server does; 0: no limit)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (agent log)")
	flag.Parse()
	lo, hi, ok := strings.Cut(faultEvery, "-")
	var err error
	if o.faultMin, err = time.ParseDuration(lo); err == nil {
		o.faultMax = o.faultMin
		if ok {
			o.faultMax, err = time.ParseDuration(hi)
		}
	}
	if err != nil || o.rate <= 0 || o.containers <= 0 || o.faultMax < o.faultMin {
		fmt.Fprintln(os.Stderr, "soak: bad flags")
		os.Exit(2)
	}
	if o.warmup == 0 {
		o.warmup = o.duration / 5
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// soak is one run.
type soak struct {
	o      options
	cli    *client.Client
	img    string
	node   string
	srv    *server
	net    *netProxy
	docker *dockertest.SocketProxy
	names  []string
	probe  string
	seq    int

	mu           sync.Mutex
	dockerCuts   []interval // when the daemon was unreachable
	faults       []string
	foreign      []string // unmanaged container names
	replays      int
	firstStart   string // the id the probe replays
	replayRan    int    // replays that started the probe container
	replayAnswer map[string]int
	startedAt    time.Time
	skipped      int // ticks without a container free to take a command
}

func (s *soak) log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak %6.1fs: %s\n", time.Since(s.startedAt).Seconds(), fmt.Sprintf(format, args...))
}

func run(o options) error {
	work, err := os.MkdirTemp("", "lormas-soak-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(work)
	}
	bin := filepath.Join(work, "lormas-agent")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/lormas-agent")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build lormas-agent: %w", err)
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx := context.Background()
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	img, err := dockertest.EnsureWorkloadImage(bctx, cli)
	cancel()
	if err != nil {
		return err
	}
	sock, ok := strings.CutPrefix(cli.DaemonHost(), "unix://")
	if !ok {
		return fmt.Errorf("DOCKER_HOST %s: the soak needs a unix socket to proxy", cli.DaemonHost())
	}

	s := &soak{o: o, cli: cli, img: img, node: fmt.Sprintf("soak-%d", os.Getpid()), replayAnswer: map[string]int{}, startedAt: time.Now()}
	defer s.cleanup()
	if s.srv, err = newServer(); err != nil {
		return err
	}
	defer s.srv.close()
	if s.net, err = newNetProxy(s.srv.addr); err != nil {
		return err
	}
	defer s.net.close()
	if s.docker, err = dockertest.NewSocketProxy(filepath.Join(work, "docker.sock"), sock, "/events?"); err != nil {
		return err
	}
	defer s.docker.Close()

	// The reference: the daemon's own events of this node's containers.
	refCtx, stopRef := context.WithCancel(ctx)
	defer stopRef()
	ref := s.reference(refCtx)

	healthAddr, err := benchkit.FreeAddr()
	if err != nil {
		return err
	}
	logPath := filepath.Join(work, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	env := []string{
		"SERVER_URL=ws://" + s.net.addr(), "NODE_TOKEN=soak", "NODE_ID=" + s.node, "NODE_NAME=" + s.node,
		"STATE_DIR=" + filepath.Join(work, "state"), "HEALTH_ADDR=" + healthAddr, "LOG_FORMAT=json", "LOG_LEVEL=info",
		"VOLUME_ROOTS=" + filepath.Join(work, "volumes"), "DOCKER_HOST=unix://" + s.docker.Path,
		"RECONNECT_MAX_DELAY=5s", "PATH=" + os.Getenv("PATH"),
	}
	if o.resultStore != "" {
		env = append(env, "RESULT_STORE_BYTES="+o.resultStore)
	}
	agent := exec.Command(bin)
	agent.Env = env
	agent.Stdout, agent.Stderr = logFile, logFile
	if err := agent.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	defer func() {
		_ = agent.Process.Kill()
	}()
	if !waitFor(30*time.Second, s.srv.connected) {
		return errors.New("the agent did not connect")
	}
	s.log("agent %d connected; work directory %s", agent.Process.Pid, work)

	if err := s.setup(); err != nil {
		return err
	}
	sampler := newSampler(agent.Process.Pid, healthAddr, o.sample)
	go sampler.run()

	// Load, replay probe and faults until the duration is up.
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() { s.load(loadCtx) })
	wg.Go(func() { s.replayProbe(loadCtx) })
	if !o.faultsDisabled {
		wg.Go(func() { s.faultLoop(loadCtx) })
	}
	wg.Wait()
	s.log("load done; waiting up to %s for the last results", o.drain)
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) && s.unanswered() > 0 {
		time.Sleep(time.Second)
	}
	time.Sleep(3 * time.Second) // the last events
	sampler.stop()
	agentMetrics := sampler.agentMetrics()

	// SIGTERM: a clean exit.
	termAt := time.Now()
	_ = agent.Process.Signal(syscall.SIGTERM)
	var exitErr error
	select {
	case exitErr = <-exited:
	case <-time.After(30 * time.Second):
		exitErr = errors.New("did not exit within 30 s")
	}
	exitTook := time.Since(termAt)
	stopRef()
	end := time.Now()
	// Every connection interval, to the end: an event relayed late (after a
	// reconnect, or once the events stream is back after a Docker outage)
	// is delivered like any other.
	snap := s.srv.snapshot(end)
	return s.report(snap, ref.take(), sampler, agentMetrics, logPath, exitErr, exitTook, end)
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func (s *soak) nextID(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return fmt.Sprintf("%s-%07d", prefix, s.seq)
}

// command sends cmd and waits for its first result.
func (s *soak) command(cmd protocol.Command, kind string, d time.Duration) (protocol.CommandResult, error) {
	if cmd.ID == "" {
		cmd.ID = s.nextID("soak")
	}
	t := s.srv.track(cmd, kind)
	select {
	case <-t.done:
		s.srv.mu.Lock()
		defer s.srv.mu.Unlock()
		return t.first, nil
	case <-time.After(d):
		return protocol.CommandResult{}, fmt.Errorf("%s %s %s: no result within %s", cmd.ID, cmd.Action, cmd.ContainerID, d)
	}
}

// setup creates and starts the managed containers through the agent.
func (s *soak) setup() error {
	one := 1
	for i := range s.o.containers + 1 {
		name := fmt.Sprintf("%s-c%02d", s.node, i)
		if i == s.o.containers {
			name = s.node + "-probe"
		}
		egg := &protocol.EggConfig{Image: s.img, PullPolicy: protocol.PullNever}
		r, err := s.command(protocol.Command{Action: protocol.ActionCreate, ContainerID: name, EggConfig: egg}, kindProbe, 2*time.Minute)
		if err == nil && r.Status != protocol.StatusSuccess {
			err = fmt.Errorf("create %s: %s", name, r.Error)
		}
		if err != nil {
			return err
		}
		if i == s.o.containers {
			s.probe = name
		} else {
			s.names = append(s.names, name)
		}
	}
	for _, name := range append([]string{s.probe}, s.names...) {
		if r, err := s.command(protocol.Command{Action: protocol.ActionStart, ContainerID: name, Timeout: &one}, kindProbe, time.Minute); err != nil || r.Status != protocol.StatusSuccess {
			return fmt.Errorf("start %s: %v %s", name, err, r.Error)
		}
	}
	s.log("%d containers and the probe container running", len(s.names))
	return nil
}

// load sends -rate commands a second over the containers.
func (s *soak) load(ctx context.Context) {
	one := 1
	lines := 20
	actions := []protocol.Action{
		protocol.ActionStart, protocol.ActionStart, protocol.ActionStop, protocol.ActionRestart, protocol.ActionKill,
		protocol.ActionLogs, protocol.ActionLogs, protocol.ActionInspect, protocol.ActionInspect, protocol.ActionList, protocol.ActionStats,
	}
	tick := time.NewTicker(time.Second / time.Duration(s.o.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a := actions[rand.IntN(len(actions))]
		target := s.names[rand.IntN(len(s.names))]
		if a == protocol.ActionList {
			target = ""
		}
		if n := s.o.maxOutstanding; n > 0 && s.srv.outstanding(target) >= n {
			free := false
			for _, i := range rand.Perm(len(s.names)) {
				if a != protocol.ActionList && s.srv.outstanding(s.names[i]) < n {
					target, free = s.names[i], true
					break
				}
			}
			if !free {
				s.mu.Lock()
				s.skipped++
				s.mu.Unlock()
				continue
			}
		}
		cmd := protocol.Command{Action: a, ContainerID: target}
		switch a {
		case protocol.ActionStop, protocol.ActionRestart:
			cmd.Timeout = &one
		case protocol.ActionLogs:
			cmd.Lines = &lines
		}
		cmd.ID = s.nextID("soak")
		s.srv.track(cmd, kindLoad)
	}
}

// replayProbe: every 30 s, stop the probe container and send the id of
// its first start again. The agent must answer from its store (or with
// conflict once the result is evicted) and never start it.
func (s *soak) replayProbe(ctx context.Context) {
	one := 1
	var firstStart string
	s.srv.mu.Lock()
	for _, id := range s.srv.order {
		var c protocol.Command
		if json.Unmarshal(s.srv.cmds[id].frame, &c) == nil && c.Action == protocol.ActionStart && c.ContainerID == s.probe {
			firstStart = id
			break
		}
	}
	frame := s.srv.cmds[firstStart].frame
	s.srv.mu.Unlock()
	s.mu.Lock()
	s.firstStart = firstStart
	s.mu.Unlock()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if r, err := s.command(protocol.Command{Action: protocol.ActionStop, ContainerID: s.probe, Timeout: &one}, kindProbe, 2*time.Minute); err != nil || r.Status != protocol.StatusSuccess {
			continue // the daemon is down, or the connection: next time
		}
		// A replay is a new send of the same id: its record counts results.
		s.srv.mu.Lock()
		t := s.srv.cmds[firstStart]
		before := t.results
		s.srv.mu.Unlock()
		s.srv.sendRaw(frame)
		ok := waitFor(30*time.Second, func() bool {
			s.srv.mu.Lock()
			defer s.srv.mu.Unlock()
			return t.results > before
		})
		time.Sleep(2 * time.Second)
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := s.cli.ContainerInspect(ictx, s.probe)
		cancel()
		s.mu.Lock()
		s.replays++
		if err == nil && c.State != nil && c.State.Running {
			s.replayRan++
			s.log("REPLAY RAN: the old start %s started the probe container again", firstStart)
		}
		s.srv.mu.Lock()
		first, last := t.first, t.last
		s.srv.mu.Unlock()
		switch {
		case !ok:
			s.replayAnswer["no answer"]++
		case last.Code == protocol.CodeConflict:
			s.replayAnswer["conflict (result evicted)"]++
		case last.Status == first.Status && fmt.Sprint(last.Result) == fmt.Sprint(first.Result):
			s.replayAnswer["the stored result"]++
		default:
			s.replayAnswer["another answer"]++
		}
		s.mu.Unlock()
	}
}

func (s *soak) unanswered() int {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	n := 0
	for _, t := range s.srv.cmds {
		if t.results == 0 && t.kind != kindBig {
			n++
		}
	}
	return n
}

// faultLoop injects one fault after each pause, in turn.
func (s *soak) faultLoop(ctx context.Context) {
	faults := []struct {
		name string
		run  func(ctx context.Context)
	}{
		{"close", s.faultClose},
		{"refuse", s.faultRefuse},
		{"malformed", s.faultMalformed},
		{"unmanaged", s.faultUnmanaged},
		{"docker", s.faultDocker},
		{"halfopen", s.faultHalfOpen},
	}
	for i := 0; ; i++ {
		pause := s.o.faultMin
		if s.o.faultMax > s.o.faultMin {
			pause += time.Duration(rand.Int64N(int64(s.o.faultMax - s.o.faultMin)))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		f := faults[i%len(faults)]
		if f.name == "halfopen" {
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < s.o.halfOpen+10*time.Second {
				continue // it would outlast the load
			}
		}
		s.log("fault %s", f.name)
		s.mu.Lock()
		s.faults = append(s.faults, f.name)
		s.mu.Unlock()
		f.run(ctx)
	}
}

func (s *soak) faultClose(context.Context) { s.srv.closeCurrent(1001, "soak: server closes") }

func (s *soak) faultRefuse(context.Context) {
	s.srv.refuseFor(5 * time.Second)
	s.srv.closeCurrent(1001, "soak: server closes, then refuses")
	time.Sleep(5 * time.Second)
}

func (s *soak) faultMalformed(context.Context) {
	s.srv.sendRaw([]byte(`{not json`))
	s.srv.track(protocol.Command{ID: s.nextID("soak-bad"), Action: "explode", ContainerID: s.names[0]}, kindBad)
	s.srv.sendRaw([]byte(`{"type":"command","action":"inspect","containerId":"../../etc"}`))
	s.srv.sendRaw(append([]byte{0}, "binary"...))
	time.Sleep(time.Second)
	big := protocol.Command{ID: s.nextID("soak-big"), Action: protocol.ActionInspect, ContainerID: s.names[0],
		Environment: map[string]string{"X": strings.Repeat("y", 2<<20)}}
	s.srv.endInterval(time.Now()) // the agent closes with 1009
	s.srv.track(big, kindBig)
}

func (s *soak) faultUnmanaged(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	for i, labels := range []map[string]string{
		nil, {"lormas.managed": "true", "lormas.node": s.node + "-other", "lormas.container": "x"},
	} {
		name := fmt.Sprintf("%s-foreign-%d-%d", s.node, i, time.Now().UnixNano())
		if _, err := s.cli.ContainerCreate(ctx, &container.Config{Image: s.img, Labels: labels}, nil, nil, nil, name); err != nil {
			s.log("unmanaged: %v", err)
			continue
		}
		s.mu.Lock()
		s.foreign = append(s.foreign, name)
		s.mu.Unlock()
		_ = s.cli.ContainerStart(ctx, name, container.StartOptions{})
		for _, a := range []protocol.Action{protocol.ActionInspect, protocol.ActionStop, protocol.ActionLogs} {
			s.srv.track(protocol.Command{ID: s.nextID("soak-foreign"), Action: a, ContainerID: name}, kindForeign)
		}
		one := 1
		_ = s.cli.ContainerStop(ctx, name, container.StopOptions{Timeout: &one})
		_ = s.cli.ContainerStart(ctx, name, container.StartOptions{})
	}
	time.Sleep(5 * time.Second)
	s.mu.Lock()
	names := append([]string(nil), s.foreign...)
	s.mu.Unlock()
	for _, n := range names {
		_ = s.cli.ContainerRemove(ctx, n, container.RemoveOptions{Force: true})
	}
}

func (s *soak) faultDocker(context.Context) {
	from := time.Now()
	s.docker.Cut()
	time.Sleep(s.o.dockerDown)
	if err := s.docker.Restore(); err != nil {
		s.log("docker restore: %v", err)
	}
	s.mu.Lock()
	s.dockerCuts = append(s.dockerCuts, interval{from: from, to: time.Now()})
	s.mu.Unlock()
}

func (s *soak) faultHalfOpen(context.Context) {
	s.srv.endInterval(time.Now())
	s.net.blackhole()
	time.Sleep(s.o.halfOpen)
	s.net.cutHoles()
}

// cleanup removes every container of this run.
func (s *soak) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list, err := s.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("name", s.node))})
	if err != nil {
		return
	}
	for _, c := range list {
		_ = s.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
}

// refEvent is a container event the daemon published.
type refEvent struct {
	key     string
	at      time.Time
	managed bool
}

type refStream struct {
	mu     sync.Mutex
	events []refEvent
}

func (r *refStream) take() []refEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]refEvent(nil), r.events...)
}

// relayedActions are the actions the agent relays (docs/protocol.md).
var relayedActions = []string{"start", "die", "oom", "stop", "kill", "restart", "destroy", "health_status"}

// reference reads the daemon's events of this run's containers directly,
// resubscribing (since shortly before the last event) when its stream
// breaks.
func (s *soak) reference(ctx context.Context) *refStream {
	r := &refStream{}
	seen := map[string]bool{}
	go func() {
		since := time.Now()
		for ctx.Err() == nil {
			opts := events.ListOptions{Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
				Filters: filters.NewArgs(filters.Arg("type", "container"))}
			msgs, errs := s.cli.Events(ctx, opts)
		read:
			for {
				select {
				case m := <-msgs:
					since = time.Unix(0, m.TimeNano).Add(-time.Second)
					s.refEvent(r, m, seen)
				case err := <-errs:
					if ctx.Err() == nil {
						fmt.Fprintln(os.Stderr, "soak: reference events stream:", err, "(resubscribing)")
						time.Sleep(time.Second)
					}
					break read
				}
			}
		}
	}()
	return r
}

func (s *soak) refEvent(r *refStream, m events.Message, seen map[string]bool) {
	name := m.Actor.Attributes["name"]
	if !strings.HasPrefix(name, s.node) {
		return
	}
	action := string(m.Action)
	relayed := false
	for _, a := range relayedActions {
		relayed = relayed || action == a || strings.HasPrefix(action, a+":")
	}
	if !relayed {
		return
	}
	k := fmt.Sprint(m.Actor.ID, action, m.TimeNano)
	if seen[k] { // replayed after a resubscription
		return
	}
	seen[k] = true
	managed := m.Actor.Attributes["lormas.node"] == s.node
	id := name
	if managed {
		id = m.Actor.Attributes["lormas.container"]
	}
	r.mu.Lock()
	r.events = append(r.events, refEvent{key: id + " " + action + " " + protocol.Timestamp(time.Unix(0, m.TimeNano)),
		at: time.Unix(0, m.TimeNano), managed: managed})
	r.mu.Unlock()
}

// sampler reads the agent's RSS, open files and goroutines.
type sampler struct {
	pid     int
	metrics string
	every   time.Duration
	mu      sync.Mutex
	samples []sample
	done    chan struct{}
	once    sync.Once
}

type sample struct {
	at                      time.Time
	rssKiB, fds, goroutines float64
	heapKiB                 float64 // Go heap in use
	liveKiB                 float64 // Go heap live after the last collection
}

func newSampler(pid int, healthAddr string, every time.Duration) *sampler {
	return &sampler{pid: pid, metrics: "http://" + healthAddr + "/metrics", every: every, done: make(chan struct{})}
}

func (p *sampler) stop() { p.once.Do(func() { close(p.done) }) }

func (p *sampler) run() {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		smp := sample{at: time.Now(), rssKiB: float64(benchkit.RSSKiB(p.pid)), fds: float64(fdCount(p.pid))}
		m := p.metricValues("go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_heap_live_bytes")
		smp.goroutines, smp.heapKiB, smp.liveKiB = m[0], m[1]/1024, m[2]/1024
		p.mu.Lock()
		p.samples = append(p.samples, smp)
		p.mu.Unlock()
		select {
		case <-tick.C:
		case <-p.done:
			return
		}
	}
}

// agentMetrics reads the agent's own lormas_agent_* series from its
// /metrics (series name with labels -> value); nil when it does not answer.
func (p *sampler) agentMetrics() map[string]float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(p.metrics)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "lormas_agent_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// metricValues reads the named metrics (without labels) from the
// agent's /metrics; -1 for those missing.
func (p *sampler) metricValues(names ...string) []float64 {
	out := make([]float64, len(names))
	for i := range out {
		out[i] = -1
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(p.metrics)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for i, n := range names {
			if v, ok := strings.CutPrefix(sc.Text(), n+" "); ok {
				out[i], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out
}

func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}
