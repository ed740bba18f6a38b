// Package httpcheck is the HTTP probe behind both binaries' healthcheck
// subcommands, which the images' HEALTHCHECK runs (the distroless images
// have no shell or curl): one GET of a health endpoint on this host, healthy
// on 200. It imports nothing of ours, so lormas-server uses it without the
// agent's health package (its metrics and the agent).
package httpcheck

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultTimeout bounds Get when ctx has no deadline.
const DefaultTimeout = 5 * time.Second

// bodyLimit is how much of an unhealthy answer's body StatusError keeps.
const bodyLimit = 4096

// StatusError is a health endpoint's answer other than 200.
type StatusError struct {
	URL    string
	Status string // as in the status line: "503 Service Unavailable"
	Body   string // the body's first bodyLimit bytes, as sent
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %s: %s", e.URL, e.Status, e.Body)
}

// Get GETs url and returns nil when it answers 200, a *StatusError when it
// answers otherwise, and the client's error when it does not answer. It
// uses no proxy and no keep-alive (the probe targets this host, once), and
// does not verify a TLS certificate: on loopback the certificate's names
// (the public host) never match, and the probe checks liveness, not
// identity.
func Get(ctx context.Context, url string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
	}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, bodyLimit))
	if resp.StatusCode != http.StatusOK {
		return &StatusError{URL: url, Status: resp.Status, Body: string(body)}
	}
	return nil
}
