package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/server/store"
)

// Server is a running lormas-server: its database, credentials, agent
// sessions and HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	audit    *slog.Logger // one line per issued token and per refusal (see limiter)
	limiter  *failureLimiter
	store    *store.Store
	creds    credentials
	tokens   *tokenIssuer
	hub      *hub
	upgrader *gws.Upgrader
	handler  http.Handler
	httpSrv  *http.Server
	tickets  ticketStore // console tickets (tickets.go)
	reports  *reports    // heartbeats and agent details, written in batches (heartbeats.go)

	// tokenMu serialises "store a node's new token, then close sessions
	// using any other": without it a slower of two concurrent rotations
	// (or a rotation and a re-enrollment) could close the session that
	// authenticated with the newest token.
	tokenMu sync.Mutex

	// Test seams: the clock (tokens' iat/exp, stored times) and the write
	// deadline per frame to an agent.
	clock        atomic.Pointer[func() time.Time]
	writeTimeout time.Duration

	closing      chan struct{} // closed when Shutdown begins
	shutdownOnce sync.Once
	shutdownErr  error

	// requests counts handlers in flight; reqMu makes "not closed yet, so
	// count me" atomic with Shutdown's "closed, now wait".
	reqMu    sync.RWMutex
	reqOpen  bool
	requests sync.WaitGroup
}

// agentReadBuffer is the read buffer of an agent's connection (gws's
// default: 4 KiB).
const agentReadBuffer = 1 << 10

// New opens (creating on first start) the database under cfg.DataDir, loads
// or generates the secrets, and builds the HTTP handler. cfg should come
// from LoadConfig. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.EnrollmentTokenExport == "" {
		cfg.EnrollmentTokenExport = filepath.Join(cfg.DataDir, "enrollment-token")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, filepath.Join(cfg.DataDir, store.FileName))
	if err != nil {
		return nil, err
	}
	creds, err := loadCredentials(ctx, st, cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	srv := &Server{
		cfg:          cfg,
		log:          logger,
		store:        st,
		creds:        creds,
		hub:          newHub(logger.With("component", "hub"), cfg.PingInterval),
		closing:      make(chan struct{}),
		reqOpen:      true,
		writeTimeout: writeTimeout,
	}
	srv.setClock(time.Now)
	srv.audit = logger.With("component", "audit")
	burst, interval := cfg.AuthFailureBurst, cfg.AuthFailureInterval
	if burst < 1 || interval <= 0 { // a Config not from LoadConfig
		burst, interval = 10, 6*time.Second
	}
	srv.limiter = newFailureLimiter(burst, interval, srv.now, srv.audit)
	go srv.limiter.run()
	flush := cfg.HeartbeatFlushInterval
	if flush <= 0 { // a Config not from LoadConfig
		flush = 10 * time.Second
	}
	srv.reports = newReports(st, flush, logger.With("component", "store"))
	go srv.reports.run()
	srv.tokens = &tokenIssuer{key: creds.jwtKey, ttl: cfg.NodeTokenTTL, now: func() time.Time { return srv.now() }}
	srv.upgrader = gws.NewUpgrader(socketHandler{srv}, &gws.ServerOption{
		ReadMaxPayloadSize: int(cfg.MaxMessageBytes),
		// Frames larger than the buffer are read past it; agents' frames
		// are mostly heartbeats of a few hundred bytes, and the buffer is
		// held by every connected agent.
		ReadBufferSize:   agentReadBuffer,
		NewSession:       func() gws.SessionStorage { return &sessionStorage{} },
		HandshakeTimeout: 10 * time.Second,
		Recovery:         gws.Recovery,
		Logger:           gwsLogger{logger},
	})
	srv.handler = srv.middleware(seedSocketPath(jsonRouteErrors(srv.routes())))
	srv.httpSrv = &http.Server{
		Handler:           srv.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if creds.enrollmentExported != "" {
		logger.Info("enrollment token (generated) written for agents",
			"file", creds.enrollmentExported)
	}
	return srv, nil
}

func (srv *Server) now() time.Time { return (*srv.clock.Load())() }

func (srv *Server) setClock(f func() time.Time) { srv.clock.Store(&f) }

// routes is the API (see the package documentation).
func (srv *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", srv.handleHealth)
	mux.HandleFunc("POST /api/nodes", srv.admin(srv.handleCreateNode))
	mux.HandleFunc("GET /api/nodes", srv.admin(srv.handleListNodes))
	mux.HandleFunc("POST /api/nodes/enroll", srv.handleEnroll)
	mux.HandleFunc("GET /api/nodes/{id}", srv.admin(srv.handleGetNode))
	mux.HandleFunc("DELETE /api/nodes/{id}", srv.admin(srv.handleDeleteNode))
	mux.HandleFunc("PATCH /api/nodes/{id}/token", srv.admin(srv.handleRotateToken))
	mux.HandleFunc("POST /api/nodes/{id}/commands", srv.admin(srv.handleCommand))
	mux.HandleFunc("GET /api/nodes/{id}/events", srv.admin(srv.handleEvents))
	mux.HandleFunc("GET /api/nodes/{id}/containers/{containerId}/logs", srv.admin(srv.handleLogs))
	mux.HandleFunc("GET /api/ws/nodes", srv.handleSocket)
	srv.consoleRoutes(mux) // exec, attach, stats, tickets (console.go)
	return mux
}

// seedSocketPath serves the seed agent's socket URL when its SERVER_URL ends
// in "/": it dials "//api/ws/nodes", which ServeMux would answer with a
// redirect that a WebSocket client does not follow.
func seedSocketPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.TrimLeft(r.URL.Path, "/") == "api/ws/nodes" {
			r.URL.Path = "/api/ws/nodes"
		}
		next.ServeHTTP(w, r)
	})
}

// Handler returns the server's HTTP handler, for httptest or another
// http.Server.
func (srv *Server) Handler() http.Handler { return srv.handler }

// GeneratedAdminToken returns the admin token if this start generated it
// (the first start without ADMIN_TOKEN), else "". The database keeps only
// its hash; the token itself is in GeneratedAdminTokenFile.
func (srv *Server) GeneratedAdminToken() string { return srv.creds.generatedAdminToken }

// GeneratedAdminTokenFile returns the file (DATA_DIR/admin-token, mode
// 0600) this start wrote the generated admin token to, "" when it generated
// none or could not write it.
func (srv *Server) GeneratedAdminTokenFile() string { return srv.creds.generatedAdminFile }

// EnrollmentTokenFile returns the file the generated enrollment token was
// written to, or "" when ENROLLMENT_TOKEN was configured.
func (srv *Server) EnrollmentTokenFile() string { return srv.creds.enrollmentExported }

// Serve accepts connections on ln (TLS when TLS_CERT_FILE is set) until
// Shutdown; it then returns nil.
func (srv *Server) Serve(ln net.Listener) error {
	var err error
	if srv.cfg.TLSCertFile != "" {
		err = srv.httpSrv.ServeTLS(ln, srv.cfg.TLSCertFile, srv.cfg.TLSKeyFile)
	} else {
		err = srv.httpSrv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// enter counts a request in, unless shutdown has begun.
func (srv *Server) enter() bool {
	srv.reqMu.RLock()
	defer srv.reqMu.RUnlock()
	if !srv.reqOpen {
		return false
	}
	srv.requests.Add(1)
	return true
}

// Shutdown stops the server gracefully: waiting requests and event streams
// end, listeners close, agent sessions are closed with 1001 ("going away";
// agents reconnect to the next instance), and the database is closed. It
// waits for all of that until ctx ends.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.shutdownOnce.Do(func() {
		close(srv.closing)
		srv.reqMu.Lock()
		srv.reqOpen = false
		srv.reqMu.Unlock()

		var errs []error
		if err := srv.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http server: %w", err))
		}
		if err := waitGroup(ctx, &srv.requests); err != nil {
			errs = append(errs, fmt.Errorf("wait for requests: %w", err))
		}
		if err := srv.hub.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close agent sessions: %w", err))
		}
		// The sessions are closed: the last heartbeats are in.
		if err := srv.reports.close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("write heartbeats and agent details: %w", err))
		}
		if err := srv.limiter.close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop the failure limiter: %w", err))
		}
		if err := srv.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close database: %w", err))
		}
		srv.shutdownErr = errors.Join(errs...)
	})
	return srv.shutdownErr
}

// Close is Shutdown with a 10-second limit.
func (srv *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
