package doctor

import (
	"context"
	"fmt"

	"github.com/lormas/lormas-agent/internal/hostmetrics"
)

// CheckHostMetrics samples the host once, as heartbeats do, from the
// paths in opts (HOST_PROC, HOST_SYS, HOST_ROOT).
func CheckHostMetrics(ctx context.Context, opts hostmetrics.Options) Result {
	r := Result{Check: "host metrics"}
	src := "/proc"
	if opts.ProcPath != "" {
		src = "HOST_PROC=" + opts.ProcPath
	}
	res, err := hostmetrics.New(opts).Sample(ctx)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot read host metrics from %s: %v", src, err)
		r.Fix = "in a container, mount the host's /proc read-only: -v /proc:/host/proc:ro -e HOST_PROC=/host/proc"
		return r
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("cpu %.0f%% of %d cores, memory %s of %dMB, load %.2f (from %s)",
		res.CPU*100, res.CPUCores, res.Memory, res.MemoryTotalBytes>>20, res.Load1, src)
	return r
}
