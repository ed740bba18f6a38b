package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Defaults of Options.
const (
	DefaultCallTimeout = 30 * time.Second
	DefaultPidsLimit   = 512
	DefaultLogMaxSize  = "10m"
	DefaultLogMaxFile  = 3
	// PullTimeout bounds one image pull, which may move gigabytes.
	PullTimeout = 10 * time.Minute
	// defaultStopGrace is Docker's own default stop timeout, used to size the
	// deadline of a stop without an explicit timeout.
	defaultStopGrace = 10
)

// Disk limit modes (DISK_LIMIT_MODE).
const (
	DiskLimitWarn   = "warn"   // create without the limit, with a warning
	DiskLimitStrict = "strict" // refuse the create (code invalid)
)

// Options configure an Engine. The Docker connection itself comes from the
// environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH,
// DOCKER_API_VERSION), as for the docker CLI.
type Options struct {
	Daemon         Daemon   // the Docker daemon (DOCKER_HOST, ...)
	NodeID         string   // value of the lormas.node label; "" leaves it off
	VolumeRoots    []string // bind mounts must lie inside one; default policy.DefaultVolumeRoot
	StateDir       string   // the agent's STATE_DIR (node key, token): never mountable
	AllowUnmanaged bool     // act on containers without the lormas labels
	DiskLimitMode  string   // DiskLimitWarn (default) or DiskLimitStrict
	PidsLimit      int64    // default pids limit; 0 = DefaultPidsLimit, negative = unlimited
	LogMaxSize     string   // json-file max-size; default DefaultLogMaxSize
	LogMaxFile     int      // json-file max-file; default DefaultLogMaxFile
	CallTimeout    time.Duration
	Logger         *slog.Logger
	// DenyExec and DenyConsoleInput turn off exec and console input
	// (ALLOW_EXEC=false, ALLOW_CONSOLE_INPUT=false; console.go).
	DenyExec, DenyConsoleInput bool

	probe *selfProbe // where to look for the agent's own mounts; tests set it
}

// Engine executes commands against the Docker Engine. It is safe for
// concurrent use; the agent serialises commands per container.
type Engine struct {
	cli         *client.Client
	owner       policy.Ownership
	volumes     *policy.Volumes
	diskMode    string
	pidsLimit   int64 // 0 = unlimited
	logOpts     map[string]string
	callTimeout time.Duration
	pullTimeout time.Duration
	log         *slog.Logger

	denyExec, denyConsoleInput bool // console policy (console.go)

	storageMu sync.Mutex
	storage   *storageSupport // nil until the daemon answered Info

	negotiateMu sync.Mutex
	negotiated  atomic.Bool

	// statsTicker paces followed stats (statsfollow.go); nil: a time.Ticker.
	// Tests set it to tick when they have read the container's counters.
	statsTicker func(time.Duration) (ticks <-chan time.Time, stop func())

	// Events resubscription backoff, and the wait for a resubscription's
	// replay to show the last event seen (tests shorten them).
	eventsMinBackoff, eventsMaxBackoff time.Duration
	eventsReplayWait                   time.Duration

	// Whether the agent sees the volume roots as Docker does (visibility.go).
	probe        selfProbe
	rootsMu      sync.Mutex
	rootsChecked bool
	selfID       string // the agent's own container on this daemon, or ""
	stateDir     string // Options.StateDir, absolute

	// index maps managed containers' names to their Docker ids while an
	// events subscription keeps it current (index.go).
	index *containerIndex
	// pulls shares one pull among concurrent creates of an image.
	pulls pullGroup
}

// New returns an Engine for the Docker daemon opts.Daemon names. It logs a
// warning for each volume root that others may write to, and does not ask
// the daemon anything: a daemon that is down or hung must not hold up the
// agent's start. CheckRoots asks it whether the agent sees each root at the
// path Docker does; until that has succeeded, the first create with a bind
// mount does it. A daemon that is down shows up as unavailable errors (and
// in Info) until it comes back.
func New(opts Options) (*Engine, error) {
	cli, err := client.NewClientWithOpts(append(opts.Daemon.ClientOpts(), client.WithAPIVersionNegotiation(),
		// The client wraps every request in OpenTelemetry instrumentation
		// that nothing here exports; building its span and metric
		// attributes cost a seventh of the agent's CPU per command
		// (profiled). The filter passes requests straight through.
		client.WithTraceOptions(otelhttp.WithFilter(func(*http.Request) bool { return false })))...)
	if err != nil {
		return nil, fmt.Errorf("configure docker client: %w", err)
	}
	e, err := newEngine(cli, opts)
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	return e, nil
}

func newEngine(cli *client.Client, opts Options) (*Engine, error) {
	roots := opts.VolumeRoots
	if len(roots) == 0 {
		roots = []string{policy.DefaultVolumeRoot}
	}
	// The socket the agent itself talks to is never mountable, wherever it is.
	var extra []string
	if sock, ok := strings.CutPrefix(cli.DaemonHost(), "unix://"); ok {
		extra = append(extra, sock)
	}
	vols, err := policy.NewVolumes(roots, extra...)
	if err != nil {
		return nil, fmt.Errorf("volume roots: %w", err)
	}
	e := &Engine{
		cli:              cli,
		owner:            policy.Ownership{NodeID: opts.NodeID, AllowUnmanaged: opts.AllowUnmanaged},
		volumes:          vols,
		diskMode:         opts.DiskLimitMode,
		pidsLimit:        opts.PidsLimit,
		callTimeout:      opts.CallTimeout,
		pullTimeout:      PullTimeout,
		log:              opts.Logger,
		denyExec:         opts.DenyExec,
		denyConsoleInput: opts.DenyConsoleInput,
		eventsMinBackoff: 250 * time.Millisecond,
		eventsMaxBackoff: time.Second, // a ping a second: back within a second of the daemon
		eventsReplayWait: eventsReplayWait,
		index:            newContainerIndex(),
	}
	switch e.diskMode {
	case "":
		e.diskMode = DiskLimitWarn
	case DiskLimitWarn, DiskLimitStrict:
	default:
		return nil, fmt.Errorf("disk limit mode %q: want %s or %s", opts.DiskLimitMode, DiskLimitWarn, DiskLimitStrict)
	}
	switch {
	case e.pidsLimit == 0:
		e.pidsLimit = DefaultPidsLimit
	case e.pidsLimit < 0:
		e.pidsLimit = 0
	}
	maxSize, maxFile := opts.LogMaxSize, opts.LogMaxFile
	if maxSize == "" {
		maxSize = DefaultLogMaxSize
	}
	if maxFile <= 0 {
		maxFile = DefaultLogMaxFile
	}
	// Docker's own size parser differs from the protocol's in corner cases:
	// give it plain bytes.
	maxBytes, err := protocol.ParseSize(maxSize)
	if err != nil || maxBytes < 1<<10 {
		return nil, fmt.Errorf("log max size %q: want a size of at least 1k such as 10m", maxSize)
	}
	e.logOpts = map[string]string{"max-size": fmt.Sprint(maxBytes), "max-file": fmt.Sprint(maxFile)}
	if e.callTimeout <= 0 {
		e.callTimeout = DefaultCallTimeout
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "docker")
	e.volumes.SetLogger(e.log)
	if opts.StateDir != "" {
		if e.stateDir, err = filepath.Abs(opts.StateDir); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
		if err := e.volumes.Protect("the agent's state directory (STATE_DIR)", e.stateDir); err != nil {
			return nil, fmt.Errorf("volume roots: %w", err)
		}
	}
	e.probe = defaultProbe(cli)
	if opts.probe != nil {
		e.probe = *opts.probe
	}
	for _, w := range e.volumes.Audit() {
		e.log.Warn("volume root is not safe", "problem", w)
	}
	return e, nil
}

// CheckRoots finds out, bounded by startCheckTimeout, whether the agent sees
// each volume root at the path Docker does (checkRoots: it asks the daemon
// for its data root, which no bind may touch, and about the agent's own
// container when it runs in one), and logs what it found. When the daemon
// does not answer, the first create with a bind mount tries again. It waits
// on the daemon: the agent runs it in the background at start.
func (e *Engine) CheckRoots(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, min(e.callTimeout, startCheckTimeout))
	defer cancel()
	if err := e.checkRoots(ctx); err != nil {
		e.log.Warn("cannot check the volume roots yet: bind mounts wait until the Docker Engine answers", "err", err)
	}
}

// Close releases the Docker client. Containers are left as they are.
func (e *Engine) Close() error { return e.cli.Close() }

// call returns the context of one Docker API call: ctx bounded by the call
// timeout plus extra (a stop's grace period, for instance).
func (e *Engine) call(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.callTimeout+extra)
}

// ready negotiates the API version with the daemon once, before any other
// call. The client would do it lazily in every call, but it writes its version
// field under a lock that its readers (Events, request paths) do not take, so
// concurrent first calls race; after one negotiation nothing writes it again.
// what names the failing operation in the error when the daemon is down.
func (e *Engine) ready(ctx context.Context, format string, args ...any) error {
	if e.negotiated.Load() {
		return nil
	}
	e.negotiateMu.Lock()
	defer e.negotiateMu.Unlock()
	if e.negotiated.Load() {
		return nil
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	ping, err := e.cli.Ping(ctx)
	if err != nil {
		return dockerError(err, format, args...)
	}
	e.cli.NegotiateAPIVersionPing(ping)
	e.negotiated.Store(true)
	return nil
}

// Info returns the engine's version and the negotiated API version.
func (e *Engine) Info(ctx context.Context) (protocol.EngineInfo, error) {
	if err := e.ready(ctx, "query docker engine version"); err != nil {
		return protocol.EngineInfo{}, err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	v, err := e.cli.ServerVersion(ctx)
	if err != nil {
		return protocol.EngineInfo{}, dockerError(err, "query docker engine version")
	}
	return protocol.EngineInfo{Version: v.Version, APIVersion: e.cli.ClientVersion()}, nil
}

// lookup finds the container named id for action and checks that this agent
// may act on it. It refuses ids that are not container names (the id is part
// of API URLs) and containers Docker matched by id prefix instead of name.
func (e *Engine) lookup(ctx context.Context, action, id string) (container.InspectResponse, error) {
	if err := protocol.ValidateContainerID(id); err != nil {
		return container.InspectResponse{}, err
	}
	if err := e.ready(ctx, "%s container %s", action, id); err != nil {
		return container.InspectResponse{}, err
	}
	ictx, cancel := e.call(ctx, 0)
	defer cancel()
	gen := e.index.generation()
	c, err := e.cli.ContainerInspect(ictx, id)
	if err == nil && !namedAs(c, id) {
		err = errNoSuchContainer
	}
	if err != nil {
		if errors.Is(err, errNoSuchContainer) || isNotFound(err) {
			return c, protocol.Errorf(protocol.CodeNotFound, "%s container %s: no such container", action, id)
		}
		return c, dockerError(err, "%s container %s", action, id)
	}
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	if err := e.owner.Check(id, labels); err != nil {
		return c, fmt.Errorf("%s container %s: %w", action, id, err)
	}
	if e.owner.Owns(labels) {
		e.index.record(gen, id, entryOf(c))
	}
	return c, nil
}

var errNoSuchContainer = errors.New("no such container")

// namedAs reports whether Docker's answer for id is the container named id
// (Docker also resolves ids and id prefixes).
func namedAs(c container.InspectResponse, id string) bool {
	return c.ContainerJSONBase != nil && strings.TrimPrefix(c.Name, "/") == id
}
