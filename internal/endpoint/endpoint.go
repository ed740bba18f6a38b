// Package endpoint turns the operator's SERVER_URL into the URLs the agent
// dials, and redacts secrets from URLs before they are logged.
package endpoint

import (
	"fmt"
	"net/url"
	"strings"
)

// NodeSocketPath is the server's WebSocket endpoint for node agents.
const NodeSocketPath = "/api/ws/nodes"

// Parse validates SERVER_URL and returns its WebSocket form: http maps to ws,
// https to wss; a trailing slash or path prefix is kept without doubling "/".
func Parse(serverURL string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(serverURL))
	if err != nil {
		return nil, fmt.Errorf("server URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("server URL %q: scheme must be ws, wss, http or https", Redact(serverURL))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server URL %q: no host", Redact(serverURL))
	}
	if u.User != nil {
		return nil, fmt.Errorf("server URL %q: user info is not supported; use NODE_TOKEN", Redact(serverURL))
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// apiSuffixes are path endings of a SERVER_URL that name the API instead
// of the server's base URL, longest first.
var apiSuffixes = []string{NodeSocketPath, "/api/ws", "/api"}

// APISuffix reports whether base (from Parse) ends in /api, /api/ws or
// /api/ws/nodes, and if so returns base without that ending: the agent
// appends /api/ws/nodes itself, so such a URL makes it dial
// /api/api/ws/nodes, which a Lormas server answers with 404.
func APISuffix(base *url.URL) (suffix, fixed string, ok bool) {
	for _, s := range apiSuffixes {
		if p, found := strings.CutSuffix(base.Path, s); found {
			u := *base
			u.Path = p
			return s, Redact(u.String()), true
		}
	}
	return "", "", false
}

// NotFoundHint is what to do when the server answered 404 at url (a URL
// built from base): name the URL and, for a base ending in /api, the
// SERVER_URL to set instead.
func NotFoundHint(base *url.URL, url string) string {
	hint := "SERVER_URL must be the Lormas server's base URL: the agent appends " + NodeSocketPath + " (and /api/nodes/enroll) itself; " +
		Redact(url) + " answered 404"
	if s, fixed, ok := APISuffix(base); ok {
		hint += "; SERVER_URL ends in " + s + ": set SERVER_URL=" + fixed
	}
	return hint
}

// NodeSocketURL is base + /api/ws/nodes?token=<token> (the seed's form).
func NodeSocketURL(base *url.URL, token string) string {
	u := *base
	u.Path += NodeSocketPath
	u.RawQuery = url.Values{"token": {token}}.Encode()
	return u.String()
}

// HTTPURL is the http(s) form of base joined with path, for REST calls
// such as enrollment.
func HTTPURL(base *url.URL, path string) string {
	u := *base
	if u.Scheme == "wss" {
		u.Scheme = "https"
	} else {
		u.Scheme = "http"
	}
	u.Path += path
	return u.String()
}

// Redact returns raw with the values of secret-looking query parameters and
// any user info replaced by "REDACTED". Unparseable input is elided whole.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		// A query that does not parse could hide a token anywhere in it.
		u.RawQuery = "REDACTED"
		return u.String()
	}
	changed := false
	for k := range q {
		switch strings.ToLower(k) {
		case "token", "access_token", "jwt", "key", "secret", "password":
			q.Set(k, "REDACTED")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}
