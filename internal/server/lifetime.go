package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// A session's token lifetime (docs/protocol.md): the session ends when its token
// expires, and an agent that announced the token_refresh capability gets a
// fresh token over the session before that, after 2/3 of the lifetime (at
// the latest refreshMargin before exp). The session then runs on the new
// token; the previous one stays valid until its own exp, so an agent that
// missed the message can still connect with it.
const (
	refreshMargin   = time.Second     // refresh at least this long before exp
	refreshMinGap   = time.Second     // never two refreshes closer than this
	refreshRetry    = time.Second     // after a failed refresh
	refreshSendWait = 5 * time.Second // queueing the token_refresh frame
)

var errNoLongerCurrent = errors.New("the session's token is no longer the node's")

func claimTime(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}

// setToken records the token the session runs on.
func (s *session) setToken(jti string, iat, exp time.Time) {
	s.tokMu.Lock()
	s.jti, s.iat, s.exp = jti, iat, exp
	s.tokMu.Unlock()
}

// tokenID is the jti of the token the session runs on.
func (s *session) tokenID() string {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	return s.jti
}

func (s *session) tokenTimes() (iat, exp time.Time) {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	return s.iat, s.exp
}

// refreshTime is when a token issued at iat and expiring at exp is
// replaced: after 2/3 of its lifetime, but at least refreshMargin before
// exp.
func refreshTime(iat, exp time.Time) time.Time {
	at := iat.Add(exp.Sub(iat) * 2 / 3)
	if exp.Sub(at) < refreshMargin {
		at = exp.Add(-refreshMargin)
	}
	return at
}

// lifetimeTimer runs a session's token lifetime on one timer instead of a
// goroutine per session: it closes the session when its token expires
// (4001 "token expired") and, for an agent with the token_refresh
// capability, refreshes the token before.
type lifetimeTimer struct {
	mu        sync.Mutex
	timer     *time.Timer
	notBefore time.Time // no refresh before this (min gap, retry)
	stopped   bool
}

// armLifetime sets the timer for the session's next lifetime event: the
// refresh time when the agent can take a new token, else the expiry.
// Tokens without expiry (NODE_TOKEN_TTL=0) need no timer.
func (s *session) armLifetime() {
	l := &s.life
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	at, ok := s.nextLifetimeEvent(l.notBefore)
	if !ok {
		if l.timer != nil {
			l.timer.Stop()
		}
		return
	}
	d := at.Sub(s.srv.now())
	if l.timer == nil {
		l.timer = time.AfterFunc(d, func() { s.spawn(s.lifetimeEvent) })
		return
	}
	l.timer.Reset(d)
}

// nextLifetimeEvent is when the session's token is refreshed (refreshable
// agents, not before notBefore) or expires; false for a token without
// expiry.
func (s *session) nextLifetimeEvent(notBefore time.Time) (time.Time, bool) {
	iat, exp := s.tokenTimes()
	if exp.IsZero() {
		return time.Time{}, false
	}
	if s.refreshable.Load() {
		at := refreshTime(iat, exp)
		if at.Before(notBefore) {
			at = notBefore
		}
		if at.Before(exp) {
			return at, true
		}
	}
	return exp, true
}

// lifetimeEvent runs, as a goroutine of the session, when the timer
// fires: close at expiry, else refresh when it is time, then arm the timer
// again.
func (s *session) lifetimeEvent() {
	_, exp := s.tokenTimes()
	if exp.IsZero() {
		return
	}
	now := s.srv.now()
	if !now.Before(exp) {
		s.log.Info("closing session: its token expired", "expiredAt", exp.UTC().Format(time.RFC3339))
		s.close(closeTokenRotated, closeReasonExpired)
		return
	}
	s.life.mu.Lock()
	at, _ := s.nextLifetimeEvent(s.life.notBefore)
	s.life.mu.Unlock()
	if s.refreshable.Load() && !now.Before(at) && at.Before(exp) {
		err := s.srv.refreshSession(s)
		s.life.mu.Lock()
		switch {
		case err == nil:
			s.life.notBefore = s.srv.now().Add(refreshMinGap)
		case errors.Is(err, errNotConnected), errors.Is(err, errNoLongerCurrent):
			// Closing (rotation, deletion, shutdown): nothing to renew.
			s.life.notBefore = exp
		default:
			s.log.Warn("token refresh failed; retrying", "err", err, "in", refreshRetry)
			s.life.notBefore = s.srv.now().Add(refreshRetry)
		}
		s.life.mu.Unlock()
	}
	s.armLifetime()
}

// stop ends the timer for good (the connection has ended).
func (l *lifetimeTimer) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
	}
}

// refreshSession issues the session's node a new token, keeps the one it
// replaces valid until its own exp, moves the session onto it and sends it
// to the agent in token_refresh. The token is never logged.
func (srv *Server) refreshSession(s *session) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	srv.tokenMu.Lock()
	if s.closing.Load() {
		srv.tokenMu.Unlock()
		return errNotConnected
	}
	n, err := srv.store.Node(ctx, s.nodeID)
	if err != nil {
		srv.tokenMu.Unlock()
		return err
	}
	if !tokenIsValidFor(n, s.tokenID()) {
		srv.tokenMu.Unlock()
		return errNoLongerCurrent
	}
	tok, err := srv.tokens.issueNew(n.ID, n.Name)
	if err != nil {
		srv.tokenMu.Unlock()
		return err
	}
	if _, exp := s.tokenTimes(); !tok.expiresAt.After(exp) {
		// Same second as the current token: it would not extend the
		// session. The caller retries after refreshMinGap.
		srv.tokenMu.Unlock()
		return nil
	}
	if err := srv.store.RefreshToken(ctx, n.ID, n.TokenID, tok.jti, tok.issuedAt); err != nil {
		srv.tokenMu.Unlock()
		return err
	}
	s.setToken(tok.jti, tok.issuedAt, tok.expiresAt)
	srv.tokenMu.Unlock()

	srv.audit.Info("node token issued", "event", "refresh", "node", n.ID, "name", n.Name, "remote", s.remote,
		"expiresAt", tok.expiresAtText())
	sctx, scancel := context.WithTimeout(context.Background(), refreshSendWait)
	defer scancel()
	frame := mustMarshal(protocol.TokenRefresh{Token: tok.token, ExpiresAt: tok.expiresAtText()})
	if err := s.send(sctx, frame); err != nil {
		// The agent keeps its previous token, valid until its own exp.
		s.log.Warn("token_refresh not sent", "err", err)
	}
	return nil
}
