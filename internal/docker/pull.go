package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// progressInterval limits how often download progress of one layer is
// reported; status changes are reported at once.
const progressInterval = time.Second

// ensureImage makes the image available per the pull policy (default: the
// Kubernetes rule, defaultPullPolicy). A failed pull falls back to a local
// copy with a warning; without one the error says both. Concurrent creates
// of one image share one pull (pulls.go).
func (e *Engine) ensureImage(ctx context.Context, ref, pullPolicy string, progress func(stage, detail string)) (warnings []string, err error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInvalid, "eggConfig.image %q is not a valid image reference: %v", ref, err)
	}
	if pullPolicy == "" {
		pullPolicy = defaultPullPolicy(named)
	}
	if pullPolicy != protocol.PullAlways {
		local, err := e.imageExists(ctx, ref)
		if err != nil {
			return nil, err
		}
		switch {
		case local:
			return nil, nil
		case pullPolicy == protocol.PullNever:
			return nil, protocol.Errorf(protocol.CodeNotFound, "image %s is not present on this node and pullPolicy is never", ref)
		}
	}
	pullErr := e.pulls.do(ctx, ref, progress, e.pull)
	if pullErr == nil {
		return nil, nil
	}
	if ctx.Err() != nil {
		return nil, dockerError(ctx.Err(), "pull image %s", ref)
	}
	local, err := e.imageExists(ctx, ref)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w (after: %v)", err, pullErr)
	case local:
		e.log.Warn("image pull failed, using local copy", "image", ref, "err", pullErr)
		return []string{fmt.Sprintf("%v; using the local copy of %s", pullErr, ref)}, nil
	}
	var pe *protocol.Error
	code := protocol.CodeUnavailable
	if errors.As(pullErr, &pe) && pe.Code != protocol.CodeInternal {
		code = pe.Code
	}
	return nil, protocol.Errorf(code, "%v, and no local copy of the image exists", pullErr)
}

// defaultPullPolicy is Kubernetes' imagePullPolicy default (docs/protocol.md): always
// for an image without a tag or tagged latest (the name may point at new
// content at any time), missing for any other tag or a digest.
func defaultPullPolicy(named reference.Named) string {
	if _, ok := named.(reference.Digested); ok {
		return protocol.PullMissing
	}
	if t, ok := named.(reference.Tagged); ok && t.Tag() != "latest" {
		return protocol.PullMissing
	}
	return protocol.PullAlways
}

func (e *Engine) imageExists(ctx context.Context, ref string) (bool, error) {
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	_, err := e.cli.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	default:
		return false, dockerError(err, "inspect image %s", ref)
	}
}

// pull pulls ref and reads the progress stream to its end: the daemon answers
// 200 before the pull is done, and failures arrive inside the stream.
func (e *Engine) pull(ctx context.Context, ref string, progress func(stage, detail string)) error {
	ctx, cancel := context.WithTimeout(ctx, e.pullTimeout)
	defer cancel()
	rc, err := e.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return dockerError(err, "pull image %s", ref)
	}
	defer rc.Close()
	r := newProgressReporter(progress)
	dec := json.NewDecoder(rc)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return dockerError(err, "pull image %s: read progress", ref)
		}
		if msg := streamError(m); msg != "" {
			return protocol.Errorf(protocol.CodeUnavailable, "pull image %s: %s", ref, msg)
		}
		r.report(m)
	}
}

// streamError is the failure a progress message reports, or "": current
// daemons send errorDetail and error, older daemons and compatible engines
// only the bare error string.
func streamError(m jsonmessage.JSONMessage) string {
	if m.Error != nil && m.Error.Message != "" {
		return m.Error.Message
	}
	//lint:ignore SA1019 deprecated, but some engines send only this field
	return m.ErrorMessage
}

// progressReporter forwards pull progress: every change of a layer's status
// at once, download/extract progress of a layer at most once per
// progressInterval.
type progressReporter struct {
	fn     func(stage, detail string)
	status map[string]string
	last   map[string]time.Time
	now    func() time.Time
}

func newProgressReporter(fn func(stage, detail string)) *progressReporter {
	return &progressReporter{fn: fn, status: map[string]string{}, last: map[string]time.Time{}, now: time.Now}
}

func (r *progressReporter) report(m jsonmessage.JSONMessage) {
	if r.fn == nil || m.Status == "" {
		return
	}
	now := r.now()
	if r.status[m.ID] == m.Status && now.Sub(r.last[m.ID]) < progressInterval {
		return
	}
	r.status[m.ID], r.last[m.ID] = m.Status, now
	detail := m.Status
	if m.ID != "" {
		detail = m.ID + ": " + detail
	}
	if p := m.Progress; p != nil && p.Total > 0 {
		detail += fmt.Sprintf(" %d/%d bytes", p.Current, p.Total)
	}
	r.fn("pull", strings.TrimSpace(detail))
}
