// Package agent is the node agent's session with the Lormas server: it keeps
// a connection up (dial, identify, backoff, auth handling), dispatches the
// server's commands to the container Runtime with per-container ordering
// and a global concurrency limit, and reports results, log streams,
// progress, container events and heartbeats back.
//
// Nothing is lost across reconnects (docs/protocol.md): results wait in an outbox
// until the server has provably read them (the pong to a ping written after
// them) and are sent again after the next identify otherwise, and a command
// id seen in the last hour is answered from its stored result (or, once
// that is evicted, with conflict) instead of running again. On shutdown in-flight
// commands finish (bounded), their results are flushed, and the socket is
// closed with 1001; containers are never touched.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/transport"
)

// ErrMaxReconnects ends Run when MAX_RECONNECT_ATTEMPTS is exhausted.
var ErrMaxReconnects = errors.New("maximum reconnect attempts reached")

var (
	errNotRunning   = errors.New("agent is not running")
	errShuttingDown = errors.New("agent is shutting down")
)

// Defaults for zero Options fields (the README's configuration table).
const (
	DefaultHeartbeatInterval     = 10 * time.Second
	DefaultReconnectDelay        = time.Second
	DefaultReconnectMaxDelay     = 60 * time.Second
	DefaultMaxConcurrentCommands = 32
	DefaultMaxMessageBytes       = 1 << 20
	DefaultShutdownTimeout       = 10 * time.Second
	DefaultOutboxLimit           = 1000
)

// Internal limits.
const (
	dedupTTL        = time.Hour
	outboxMaxBytes  = 64 << 20
	maxStreams      = 256
	identifyTimeout = 5 * time.Second
	callTimeout     = 15 * time.Second // Info, List, Sample for identify/inventory/heartbeat
	cancelGrace     = 2 * time.Second  // shutdown: after cancelling, wait this long for commands
)

// timing holds the intervals that tests shorten (export_test.go).
type timing struct {
	pingInterval time.Duration // WebSocket ping
	readTimeout  time.Duration // nothing read: connection dead
	writeTimeout time.Duration // one frame write
	stableAfter  time.Duration // up this long: backoff resets
	flushTimeout time.Duration // shutdown: writing the last results
	clock        backoff.Clock // reconnect waits and how long a connection stayed up
	proxy        transport.ProxyFunc
}

func defaultTiming() timing {
	return timing{
		pingInterval: transport.DefaultPingInterval,
		readTimeout:  transport.DefaultReadTimeout,
		writeTimeout: transport.DefaultWriteTimeout,
		stableAfter:  backoff.DefaultStableAfter,
		flushTimeout: 5 * time.Second,
		clock:        backoff.RealClock{},
	}
}

// Agent is one node agent. Create it with New and run it with Run.
type Agent struct {
	opts   Options
	log    *slog.Logger
	obs    observer
	server *url.URL
	tm     timing

	cmdCtx    context.Context // commands run under it; cancelled when shutdown gives up
	cmdCancel context.CancelFunc
	disp      *dispatcher
	outbox    *outbox
	seen      *dedup
	pending   *pendingBudget
	streams   *streams
	consoles  *consoles   // exec/attach/stats sessions (sessions.go)
	logBudget *logBudget  // bytes of all follow streams' buffers
	events    *eventQueue // container events on their way to the server

	mu        sync.Mutex
	sess      *session // identified session, or nil
	token     string   // the token of the last dial
	nodeID    string   // the node id the agent runs as; fixed once set
	refreshed string   // the newest token from token_refresh, or ""
	// acceptedRefresh is the refreshed token last reported Accepted.
	acceptedRefresh string
	storeMu         sync.Mutex // serialises RefreshedTokens calls
	runtimeErr      error      // last Info/List outcome, for Ready

	sampleLog  *logging.Limiter // heartbeat failures, logged at most once a minute
	listLog    *logging.Limiter
	refuseLog  *logging.Limiter // commands refused for room, at most once a second
	cancelLog  *logging.Limiter // cancels for unknown ids, at most once a second
	refreshLog *logging.Limiter // ignored token_refresh messages
	eventDrop  *logging.Limiter // container events dropped for a slow server

	started  atomic.Bool
	running  atomic.Bool
	eventsUp atomic.Bool
	draining atomic.Bool
	stopOnce sync.Once
	settled  sync.Once // start-up memory returned (session.go)
}

// New checks opts, fills in defaults and returns an Agent.
func New(opts Options) (*Agent, error) {
	if opts.Runtime == nil {
		return nil, errors.New("agent: no container runtime")
	}
	if opts.Token == nil {
		return nil, errors.New("agent: no token source")
	}
	server, err := endpoint.Parse(opts.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if opts.NodeName == "" {
		opts.NodeName, _ = os.Hostname()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	setDefault(&opts.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefault(&opts.ReconnectDelay, DefaultReconnectDelay)
	setDefault(&opts.ReconnectMaxDelay, DefaultReconnectMaxDelay)
	setDefault(&opts.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&opts.MaxConcurrentCommands, DefaultMaxConcurrentCommands)
	setDefault(&opts.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&opts.OutboxLimit, DefaultOutboxLimit)
	setDefault(&opts.MaxPendingBytes, DefaultMaxPendingBytes)
	setDefault(&opts.MaxSessions, DefaultMaxSessions)
	setDefault(&opts.LogStreamBuffer, DefaultLogStreamBuffer)
	setDefault(&opts.ResultStoreBytes, DefaultResultStoreBytes)
	if opts.MaxReconnectAttempts < 0 {
		opts.MaxReconnectAttempts = 0
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Fail fast on unreadable TLS files; they are read again at every dial
	// so rotated certificates are picked up.
	if _, err := tlsTemplate(&opts); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}

	log := opts.Logger.With("component", "agent")
	obs := observer{nopObserver{}}
	if opts.Observer != nil {
		obs = observer{opts.Observer}
	}
	cmdCtx, cmdCancel := context.WithCancel(context.Background())
	a := &Agent{
		opts:       opts,
		log:        log,
		obs:        obs,
		server:     server,
		tm:         defaultTiming(),
		cmdCtx:     cmdCtx,
		cmdCancel:  cmdCancel,
		disp:       newDispatcher(cmdCtx, opts.MaxConcurrentCommands),
		outbox:     newOutbox(opts.OutboxLimit, outboxMaxBytes, log, obs),
		seen:       newDedup(dedupTTL, maxCommandIDs, opts.ResultStoreBytes, log),
		pending:    newPendingBudget(newPendingLimits(opts.MaxPendingBytes)),
		streams:    newStreams(),
		consoles:   newConsoles(),
		logBudget:  &logBudget{max: int64(logBudgetStreams) * int64(opts.LogStreamBuffer)},
		sampleLog:  logging.Every(time.Minute),
		listLog:    logging.Every(time.Minute),
		refuseLog:  logging.Every(time.Second),
		cancelLog:  logging.Every(time.Second),
		refreshLog: logging.Every(time.Minute),
		events:     newEventQueue(),
		eventDrop:  logging.Every(time.Minute),
		nodeID:     opts.NodeID,
	}
	a.tm.proxy = opts.Proxy
	a.seen.obs = obs
	return a, nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// tlsTemplate reads the TLS files, or returns nil when none are configured
// and verification is on (system roots then apply).
func tlsTemplate(o *Options) (*tls.Config, error) {
	if o.TLSCAFile == "" && o.TLSCertFile == "" && o.TLSKeyFile == "" && !o.TLSInsecureSkipVerify {
		return nil, nil
	}
	return transport.TLSConfig(o.TLSCAFile, o.TLSCertFile, o.TLSKeyFile, o.TLSInsecureSkipVerify)
}

// Run connects and serves until ctx is cancelled (graceful shutdown,
// returns nil) or MaxReconnectAttempts is exhausted (an error wrapping
// ErrMaxReconnects). It may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent: Run called more than once")
	}
	a.running.Store(true)
	defer a.running.Store(false)
	defer a.cmdCancel()

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if a.opts.StatusEvents {
		a.eventsUp.Store(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.eventsUp.Store(false)
			a.eventsLoop(bg)
		}()
	}

	a.log.Info("agent starting", "server", endpoint.Redact(a.server.String()), "nodeName", a.opts.NodeName,
		"version", a.opts.Version, "maxConcurrentCommands", a.opts.MaxConcurrentCommands,
		"maxPendingBytes", a.opts.MaxPendingBytes)
	a.loadRefreshed()
	err := a.connectLoop(ctx)

	// Disconnected (or giving up): let in-flight commands end; their
	// results cannot be delivered any more. After a graceful shutdown this
	// only collects what the closed socket released.
	a.stopCommands()
	if a.disp.waitIdle(cancelGrace) {
		a.disp.wait()
	}
	if n := a.outbox.len(); n > 0 {
		a.log.Warn("results not delivered before exit", "count", n)
	}
	stopBG()
	wg.Wait()
	a.log.Info("agent stopped")
	return err
}

// stopCommands refuses new commands, ends log streams and waits for
// in-flight commands up to ShutdownTimeout, then cancels the rest and
// waits briefly for them. Only the first call does anything.
func (a *Agent) stopCommands() { a.stopOnce.Do(a.drain) }

func (a *Agent) drain() {
	a.draining.Store(true)
	a.streams.cancelAll(errShuttingDown)
	if a.disp.waitIdle(a.opts.ShutdownTimeout) {
		a.disp.wait()
		return
	}
	a.log.Warn("shutdown timeout: cancelling commands still running", "count", a.disp.count(),
		"shutdownTimeout", a.opts.ShutdownTimeout)
	a.cmdCancel()
	if a.disp.waitIdle(min(cancelGrace, a.tm.flushTimeout)) {
		a.disp.wait()
		return
	}
	// A command ignoring its context, or a log stream stuck writing to a
	// server that stopped reading (closing the socket frees it).
	a.log.Error("commands still running after cancellation; not waiting for them", "count", a.disp.count())
}

// Ready reports nil when the agent is connected and identified and the
// container engine answered its last call (for /readyz).
func (a *Agent) Ready() error {
	if !a.running.Load() {
		return errNotRunning
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess == nil {
		return errors.New("not connected to the server")
	}
	if a.runtimeErr != nil {
		return fmt.Errorf("container engine unreachable: %w", a.runtimeErr)
	}
	return nil
}

// Alive reports nil while Run and its loops are running (for /healthz).
func (a *Agent) Alive() error {
	if !a.running.Load() {
		return errNotRunning
	}
	if a.opts.StatusEvents && !a.eventsUp.Load() {
		return errors.New("container events loop stopped")
	}
	return nil
}

// current returns the identified session, or nil while disconnected.
func (a *Agent) current() *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess
}

func (a *Agent) setRuntimeErr(err error) {
	a.mu.Lock()
	a.runtimeErr = err
	a.mu.Unlock()
}

// currentNodeID is the node id the agent runs as (Options.NodeID, or
// derived from the first token).
func (a *Agent) currentNodeID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nodeID
}
