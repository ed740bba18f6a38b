package protocol

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
)

// TypeTokenRefresh is the server -> agent message that hands a connected
// agent a fresh node token before its current one expires.
const TypeTokenRefresh = "token_refresh"

// CapabilityTokenRefresh is the agent_identify capability of an agent that
// stores a token received in token_refresh and dials with it next time. The
// server sends token_refresh only to agents that announce it.
const CapabilityTokenRefresh = "token_refresh"

// TokenRefresh carries a fresh node token for the node of the session
// (server -> agent): {"type":"token_refresh","token":"...","expiresAt":"RFC 3339"}.
// The session's expiry follows the new token from then on; the previous
// token stays valid until its own expiry, so an agent that missed the
// message is not locked out.
//
// Token is a credential: String, GoString and LogValue never show it, so
// the message can be printed or logged by accident without leaking it.
type TokenRefresh struct {
	Type      string `json:"type"`
	Token     string `json:"token"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

func (TokenRefresh) MessageType() string { return TypeTokenRefresh }

func (m TokenRefresh) MarshalJSON() ([]byte, error) {
	type t TokenRefresh
	m.Type = TypeTokenRefresh
	return json.Marshal(t(m))
}

// String describes the message without its token.
func (m TokenRefresh) String() string {
	return fmt.Sprintf("token_refresh{token: REDACTED (%d bytes), expiresAt: %s}", len(m.Token), strconv.Quote(m.ExpiresAt))
}

// GoString is String, so %#v does not print the token either.
func (m TokenRefresh) GoString() string { return m.String() }

// LogValue is String, so a JSON log handler does not print the token.
func (m TokenRefresh) LogValue() slog.Value { return slog.StringValue(m.String()) }
