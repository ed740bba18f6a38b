package doctor

import (
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// CheckToken checks that the node token is a JWT (read without verifying
// the signature: only the server has the key) and has not expired. The
// token never appears in the result.
func CheckToken(token string, now time.Time) Result {
	r := Result{Check: "node token"}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		r.Status = Fail
		r.Detail = "not a JWT: " + strings.ReplaceAll(err.Error(), token, "REDACTED")
		r.Fix = "use the token the server returned (POST /api/nodes, or enrollment): three base64url parts separated by dots"
		return r
	}
	id := ""
	for _, k := range []string{"nodeId", "sub", "id"} {
		if s, ok := claims[k].(string); ok && s != "" {
			id = s
			break
		}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil {
		r.Status, r.Detail = Fail, "unreadable exp claim: "+err.Error()
		r.Fix = "issue a new token (PATCH /api/nodes/{id}/token)"
		return r
	}
	if exp != nil && !now.Before(exp.Time) {
		r.Status = Fail
		r.Detail = fmt.Sprintf("expired at %s (node %q)", exp.UTC().Format(time.RFC3339), id)
		r.Fix = "issue a new token (PATCH /api/nodes/{id}/token) and update NODE_TOKEN or NODE_TOKEN_FILE (a file is re-read without restart)"
		return r
	}
	r.Status = OK
	expiry := "no expiry"
	if exp != nil {
		expiry = "expires " + exp.UTC().Format(time.RFC3339)
	}
	if id == "" {
		r.Detail = "JWT without nodeId/sub claim (heartbeats use NODE_ID or NODE_NAME), " + expiry
	} else {
		r.Detail = fmt.Sprintf("JWT for node %q, %s", id, expiry)
	}
	return r
}
