package protocol

import (
	"fmt"
	"log/slog"
	"strconv"
)

// Enrollment (POST /api/nodes/enroll) request and answer. The request
// without the proof fields is the seed-era contract {name}; with them it
// carries the node's Ed25519 public key and a signature proving the key's
// possession. A NEW node remembers the key; an EXISTING node's token is
// re-issued only to a request whose proof is signed by that node's key.
type EnrollRequest struct {
	Name string `json:"name"`
	// PublicKey is the node's Ed25519 public key (32 bytes), standard
	// base64. Optional; with it Timestamp and Signature are required.
	PublicKey string `json:"publicKey,omitempty"`
	// Timestamp is the signing time in Unix seconds. The server accepts it
	// within EnrollProofWindow of its clock and, for an existing node, only
	// when later than the last timestamp it accepted for that node.
	Timestamp int64 `json:"timestamp,omitempty"`
	// Signature is the Ed25519 signature, standard base64, of
	// EnrollProofMessage(Name, PublicKey, Timestamp).
	Signature string `json:"signature,omitempty"`
	// NodeID and Token make the request a RENEWAL: the node NodeID's token
	// Token (its current or previous one, signed by the server, expired or
	// not) is replaced, if the proof is signed by the node's key. A renewal
	// never creates a node: a node deleted by an administrator stays
	// deleted, and a rotated token cannot be renewed. Token is a
	// credential: the server never logs it.
	NodeID string `json:"nodeId,omitempty"`
	Token  string `json:"token,omitempty"`
}

// EnrollResponse is the answer to a successful enrollment: 201 for a new
// node, 200 when an existing node's token was re-issued. A refusal is an
// ErrorResponse.
type EnrollResponse struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Token string `json:"token"`
	// ExpiresAt is the token's expiry (RFC 3339), absent when it has none.
	ExpiresAt string `json:"expiresAt,omitempty"`
}

// ErrorResponse is the body of every error answer of lormas-server's HTTP
// API, enrollment's included: {"error": "a sentence"}.
type ErrorResponse struct {
	Error string `json:"error"`
}

// EnrollProofContext names what an enrollment signature is for, so it can
// never be replayed as a signature of anything else.
const EnrollProofContext = "lormas-enroll-v1"

// EnrollProofWindowSeconds is how far (either way) an enrollment proof's
// timestamp may be from the server's clock: 5 minutes.
const EnrollProofWindowSeconds = 5 * 60

// EnrollProofMessage is the byte string an enrollment proof signs:
// "lormas-enroll-v1\n<name>\n<base64 public key>\n<unix seconds>". It binds
// the purpose, the node name, the key and the time.
func EnrollProofMessage(name, publicKey string, timestamp int64) []byte {
	return []byte(EnrollProofContext + "\n" + name + "\n" + publicKey + "\n" + strconv.FormatInt(timestamp, 10))
}

// String describes the request without its token (a credential), so it can
// be printed or logged by accident without leaking it.
func (r EnrollRequest) String() string {
	return fmt.Sprintf("enroll{name: %s, nodeId: %s, publicKey: %t, timestamp: %d, signature: %t, token: REDACTED (%d bytes)}",
		strconv.Quote(r.Name), strconv.Quote(r.NodeID), r.PublicKey != "", r.Timestamp, r.Signature != "", len(r.Token))
}

// GoString is String, so %#v does not print the token either.
func (r EnrollRequest) GoString() string { return r.String() }

// String describes the answer without its token.
func (r EnrollResponse) String() string {
	return fmt.Sprintf("enrolled{id: %s, name: %s, token: REDACTED (%d bytes), expiresAt: %s}",
		strconv.Quote(r.ID), strconv.Quote(r.Name), len(r.Token), strconv.Quote(r.ExpiresAt))
}

// GoString is String, so %#v does not print the token either.
func (r EnrollResponse) GoString() string { return r.String() }

// LogValue is String, so a JSON log handler does not print the token.
func (r EnrollRequest) LogValue() slog.Value { return slog.StringValue(r.String()) }

// LogValue is String, so a JSON log handler does not print the token.
func (r EnrollResponse) LogValue() slog.Value { return slog.StringValue(r.String()) }
