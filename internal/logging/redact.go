package logging

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/secret"
)

// Redacted replaces a credential in log output.
const Redacted = "REDACTED"

// sensitiveKeys are attribute-name fragments (lower case) whose values are
// credentials. Keys ending in "file" or "path" name where a credential is
// kept, which is worth logging, and are exempt.
var sensitiveKeys = []string{"token", "authorization", "secret", "password", "passwd", "cookie"}

// Patterns that put a credential inside an otherwise harmless string, such
// as an error from a dial that quotes the URL.
var (
	queryCredential = regexp.MustCompile(`(?i)([?&](?:token|access_token|jwt|secret|password)=)[^&\s"'#]+`)
	bearerToken     = regexp.MustCompile(`(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+`)
)

// Redact is the handlers' ReplaceAttr: it replaces the value of an
// attribute whose key names a credential, any secret.Value, and
// credentials embedded in strings, errors and URLs (?token=..., "Bearer
// ..."). Use it in any other slog handler that writes agent logs.
func Redact(_ []string, a slog.Attr) slog.Attr {
	if sensitiveKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); mayHoldCredential(s) {
			return slog.String(a.Key, scrub(s))
		}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case secret.Value, *secret.Value:
			return slog.String(a.Key, Redacted)
		case *url.URL:
			if x != nil {
				return slog.String(a.Key, endpoint.Redact(x.String()))
			}
		case error:
			if s := x.Error(); mayHoldCredential(s) {
				return slog.String(a.Key, scrub(s))
			}
		}
	}
	return a
}

func sensitiveKey(key string) bool {
	k := strings.ToLower(key)
	if strings.HasSuffix(k, "file") || strings.HasSuffix(k, "path") {
		return false
	}
	for _, s := range sensitiveKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

func mayHoldCredential(s string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "=") || strings.Contains(l, "bearer")
}

// scrub replaces embedded credentials in s.
func scrub(s string) string {
	s = queryCredential.ReplaceAllString(s, "${1}"+Redacted)
	return bearerToken.ReplaceAllString(s, "${1}"+Redacted)
}
