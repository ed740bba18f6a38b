package enroll

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/nodetoken"
)

// requestTimeout bounds one enrollment request.
const requestTimeout = 30 * time.Second

// Options configure an Enroller.
type Options struct {
	ServerURL   string // SERVER_URL
	NodeName    string // NODE_NAME
	Credentials Credentials
	TLS         *tls.Config                           // nil: the system roots
	Proxy       func(*http.Request) (*url.URL, error) // nil: none
	// RetryDelay and RetryMaxDelay are the backoff of Enroll's attempts
	// (RECONNECT_DELAY, RECONNECT_MAX_DELAY).
	RetryDelay, RetryMaxDelay time.Duration
	Logger                    *slog.Logger
}

// Enroller enrolls the node with the enrollment token and keeps what the
// server issues in the state directory: the first enrollment, retried
// until it succeeds (Enroll), and the renewal of an expired token (Renew).
type Enroller struct {
	opts   Options
	server *url.URL
	hc     *http.Client
	log    *slog.Logger
}

// NewEnroller checks opts and returns an Enroller. Close releases its
// connections.
func NewEnroller(opts Options) (*Enroller, error) {
	server, err := endpoint.Parse(opts.ServerURL)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	proxy := opts.Proxy
	if proxy == nil {
		proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	hc := &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy:               proxy,
			TLSClientConfig:     opts.TLS.Clone(),
			TLSHandshakeTimeout: 10 * time.Second,
		},
	}
	return &Enroller{opts: opts, server: server, hc: hc, log: log}, nil
}

// Close closes the idle connections to the server.
func (e *Enroller) Close() { e.hc.CloseIdleConnections() }

// Enroll enrolls the node and stores the issued node token in the state
// directory, from where this and every later start read it. The node's key
// is made first (or the stored one reused): its signature proves the
// node's identity, so the server can re-issue this node's token later, and
// to nobody else.
//
// Enrollment creates a NEW node; for a name that exists already the server
// answers 409 unless this agent's key is that node's (a node whose token
// was lost but whose key survived gets its token re-issued). A failed
// attempt is retried with backoff until ctx ends; the enrollment token file
// is re-read each time, so it may appear after the agent started. The
// error is ctx's, or a key or token that cannot be stored.
func (e *Enroller) Enroll(ctx context.Context) (Result, error) {
	st := e.opts.Credentials.State
	key, created, err := st.KeyOrCreate()
	if err != nil {
		return Result{}, fmt.Errorf("node key in STATE_DIR: %w", err)
	}
	if created {
		e.log.Info("node key created", "file", st.KeyPath())
	}
	bo := backoff.New(e.opts.RetryDelay, e.opts.RetryMaxDelay)
	limit := logging.Every(time.Minute)
	e.log.Info("enrolling node", "server", endpoint.Redact(e.opts.ServerURL), "node", e.opts.NodeName)
	for {
		res, err := e.once(ctx, Request{Name: e.opts.NodeName, Key: key})
		if err == nil {
			if err := st.StoreToken(res.Token); err != nil {
				return Result{}, fmt.Errorf("enrolled as %q but cannot keep the node token: %w", res.Name, err)
			}
			e.log.Info("node enrolled", "node", res.Name, "nodeId", res.ID, "reissued", res.Reissued,
				"tokenStoredIn", st.TokenPath())
			return res, nil
		}
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		wait := bo.Next()
		level := slog.LevelWarn
		args := []any{"err", err, "attempt", bo.Attempt(), "retryIn", wait}
		var se *StatusError
		switch {
		case errors.Is(err, ErrTokenRejected):
			level = slog.LevelError // needs an operator: a new enrollment token
		case errors.As(err, &se) && se.Conflict():
			level = slog.LevelError // needs an operator: the name is taken
			args = append(args, "hint", "enrollment creates new nodes: choose another NODE_NAME, or have an administrator delete the existing node; an agent that has the node's token needs no enrollment (NODE_TOKEN_FILE)")
		case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
			level = slog.LevelError // needs an operator: SERVER_URL is wrong
			args = append(args, "hint", endpoint.NotFoundHint(e.server, endpoint.HTTPURL(e.server, Path)))
		}
		limit.Log(ctx, e.log, level, "enrollment failed; retrying", args...)
		if err := bo.WaitFor(ctx, wait); err != nil {
			return Result{}, err
		}
	}
}

// Renew is the agent's RenewExpired hook for an enrolled node: one renewal
// of the node's EXPIRED token, proved by the node's key and the expired
// token itself, whose result replaces the stored token. The server refuses
// it for a node an administrator deleted (it never creates a node) or
// whose token was rotated, and while the node is connected, so no
// administrator action is undone and no agent is knocked off.
//
// The server renews only from the node's current or previous token. An
// agent handed several tokens over one long session (token_refresh) never
// dialled with them, so its stored token may be older than both; the
// newest refreshed token is therefore tried first when it is plausible and
// newer, then the expired one. A refreshed token the server does not know
// (planted) only costs that attempt; it is removed once a renewal
// succeeded.
func (e *Enroller) Renew(ctx context.Context, expired string) error {
	st := e.opts.Credentials.State
	refreshed := e.opts.Credentials.Refreshed()
	nodeID := nodetoken.NodeID(expired)
	if nodeID == "" {
		return errors.New("renew: the expired token names no node")
	}
	key, err := st.Key()
	if err != nil {
		return fmt.Errorf("renew: %w (an agent enrolled without a key cannot renew its token; write a new token into %s)", err, st.TokenPath())
	}
	tokens := []string{expired}
	if r, err := refreshed.Load(); err == nil && renewsBetter(r, expired, nodeID, time.Now()) {
		tokens = []string{r, expired}
	}
	var first error
	for _, tok := range tokens {
		res, err := e.once(ctx, Request{Name: e.opts.NodeName, Key: key, NodeID: nodeID, Token: tok})
		if err != nil {
			var se *StatusError
			if first == nil {
				first = err
			}
			if errors.As(err, &se) && !se.Temporary() && !errors.Is(err, ErrTokenRejected) && ctx.Err() == nil {
				continue // this token refused: try the next one
			}
			break
		}
		if err := st.StoreToken(res.Token); err != nil {
			return fmt.Errorf("renewed the token of node %q but cannot keep it: %w", res.ID, err)
		}
		// The renewed token is newer than any refreshed one.
		if err := refreshed.Discard(); err != nil {
			e.log.Warn("could not remove the refreshed token", "err", err)
		}
		e.log.Info("expired node token renewed", "node", res.Name, "nodeId", res.ID, "expiresAt", res.ExpiresAt)
		return nil
	}
	return fmt.Errorf("renew: %w", first)
}

// renewsBetter reports whether r, a token from token_refresh, should be
// presented for renewal before expired: plausible for nodeID and issued
// later (it may have expired too).
func renewsBetter(r, expired, nodeID string, now time.Time) bool {
	if r == "" || r == expired {
		return false
	}
	rc, ok := nodetoken.Parse(r)
	if !ok || rc.CheckRefreshed(nodeID, now) != nil {
		return false
	}
	ec, ok := nodetoken.Parse(expired)
	return !ok || rc.IssuedAt.After(ec.IssuedAt)
}

// once sends one request with the enrollment token as it is now.
func (e *Enroller) once(ctx context.Context, req Request) (Result, error) {
	tok, err := e.opts.Credentials.EnrollmentTokenValue()
	if err != nil {
		return Result{}, err
	}
	return Enroll(ctx, e.hc, e.server, tok, req)
}
