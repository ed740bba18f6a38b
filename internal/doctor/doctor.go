// Package doctor is `lormas-agent doctor`: the seed's troubleshooting
// section as automatic checks. Each check reports ok, FAIL (with the fix to
// apply) or skip (not applicable, or impossible after an earlier failure):
// configuration, Docker socket access, Docker API version, server
// reachability, TLS verification, node token, WebSocket upgrade and host
// metrics.
package doctor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/config"
	"github.com/lormas/lormas-agent/internal/docker"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/hostmetrics"
	"github.com/lormas/lormas-agent/internal/transport"
)

// Status is a check's outcome.
type Status string

// Outcomes. Skip counts as passing: the check did not apply.
const (
	OK   Status = "ok"
	Fail Status = "FAIL"
	Skip Status = "skip"
)

// Result is one check's outcome.
type Result struct {
	Check  string // what was checked, e.g. "docker socket"
	Status Status
	Detail string // what was found
	Fix    string // for Fail: what to do, possibly several lines
}

// Options configure Run.
type Options struct {
	// Environ is the environment (os.Environ form); .env is read as by
	// the agent, and the Docker daemon, host paths and proxies are taken
	// from the two as the agent takes them, never from the process
	// environment alone.
	Environ []string
	Version string        // agent version for the User-Agent of the upgrade check
	Timeout time.Duration // per network check; default 10s
}

// defaultTimeout bounds each network check.
const defaultTimeout = 10 * time.Second

// Run performs every check in order and returns their results.
func Run(ctx context.Context, opts Options) []Result {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	var rs []Result
	cfg, err := config.Load(opts.Environ)
	if err != nil {
		rs = append(rs, Result{
			Check: "configuration", Status: Fail,
			Detail: strings.Join(config.Problems(err), "; "),
			Fix:    "correct the variables named above (`lormas-agent help` lists every variable)",
		})
	} else {
		rs = append(rs, Result{Check: "configuration", Status: OK, Detail: describe(cfg)})
	}

	// Read apart from cfg, which is nil when anything else is wrong; an
	// untrusted .env is the configuration check's failure.
	env, _ := config.Environment(opts.Environ)
	daemon := docker.Daemon{Host: env["DOCKER_HOST"], TLSVerify: env["DOCKER_TLS_VERIFY"], CertPath: env["DOCKER_CERT_PATH"]}
	sock := CheckDockerSocket(ctx, daemon.HostOrDefault(), opts.Timeout)
	rs = append(rs, sock)
	if sock.Status == Fail {
		rs = append(rs, Result{Check: "docker api", Status: Skip, Detail: "the Docker socket is not usable"})
	} else {
		rs = append(rs, CheckDockerAPI(ctx, daemon, opts.Timeout))
	}

	if cfg == nil {
		for _, c := range []string{"server reachable", "tls", "node token", "websocket upgrade"} {
			rs = append(rs, Result{Check: c, Status: Skip, Detail: "configuration invalid"})
		}
	} else {
		rs = append(rs, serverChecks(ctx, cfg, opts)...)
	}
	rs = append(rs, CheckHostMetrics(ctx, hostmetrics.Options{ProcPath: env["HOST_PROC"], SysPath: env["HOST_SYS"], RootPath: env["HOST_ROOT"]}))
	return rs
}

func serverChecks(ctx context.Context, cfg *config.Config, opts Options) []Result {
	server, err := endpoint.Parse(cfg.ServerURL)
	if err != nil { // validated by Load
		return []Result{{Check: "server reachable", Status: Fail, Detail: err.Error(), Fix: "set SERVER_URL"}}
	}
	proxy := cfg.Proxy()
	rs := []Result{CheckServerReachable(ctx, server, proxy, opts.Timeout)}
	reachable := rs[0].Status != Fail
	tlsConf, err := transport.TLSConfig(cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSInsecureSkipVerify)
	switch {
	case err != nil:
		rs = append(rs, Result{Check: "tls", Status: Fail, Detail: err.Error(),
			Fix: "TLS_CA_FILE must hold PEM certificates; TLS_CERT_FILE and TLS_KEY_FILE must be a matching PEM pair"})
	case !reachable:
		rs = append(rs, Result{Check: "tls", Status: Skip, Detail: "server not reachable"})
	default:
		rs = append(rs, CheckTLS(ctx, server, tlsConf, proxy, opts.Timeout))
	}
	tlsOK := rs[len(rs)-1].Status != Fail

	creds := cfg.Credentials()
	if creds.NeedsEnrollment() {
		detail := "no node token yet: the agent enrolls with the enrollment token at start and stores the issued token in " + creds.State.TokenPath()
		if _, err := creds.EnrollmentTokenValue(); err != nil {
			return append(rs,
				Result{Check: "node token", Status: Fail, Detail: "no node token and " + err.Error(),
					Fix: "make the enrollment token available (ENROLLMENT_TOKEN or ENROLLMENT_TOKEN_FILE), or set NODE_TOKEN / NODE_TOKEN_FILE"},
				Result{Check: "websocket upgrade", Status: Skip, Detail: "no node token"})
		}
		return append(rs,
			Result{Check: "node token", Status: Skip, Detail: detail},
			Result{Check: "websocket upgrade", Status: Skip, Detail: "no node token yet"})
	}
	token, err := creds.Token()
	if err != nil {
		return append(rs,
			Result{Check: "node token", Status: Fail, Detail: err.Error(), Fix: "make NODE_TOKEN_FILE readable by the agent, or set NODE_TOKEN"},
			Result{Check: "websocket upgrade", Status: Skip, Detail: "no node token"})
	}
	rs = append(rs, CheckToken(token, time.Now()))
	if !reachable || !tlsOK {
		return append(rs, Result{Check: "websocket upgrade", Status: Skip, Detail: "server not reachable (see above)"})
	}
	return append(rs, CheckUpgrade(ctx, server, token, cfg.NodeTokenInQuery, tlsConf, proxy, opts.Version, opts.Timeout))
}

// describe summarises a valid configuration without secrets.
func describe(cfg *config.Config) string {
	creds := cfg.Credentials()
	src := "stored token " + creds.State.TokenPath()
	switch {
	case cfg.NodeTokenFile != "":
		src = "NODE_TOKEN_FILE " + cfg.NodeTokenFile
	case !cfg.NodeToken.IsZero():
		src = "NODE_TOKEN"
	case creds.NeedsEnrollment():
		src = "enrollment"
	}
	return fmt.Sprintf("server %s, node %q, token from %s", endpoint.Redact(cfg.ServerURL), cfg.NodeName, src)
}

// Print writes the results, one line each plus indented fix lines, and
// reports whether every check passed (ok or skip).
func Print(w io.Writer, rs []Result) bool {
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Check))
	}
	pass := true
	for _, r := range rs {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", r.Status, width, r.Check, r.Detail)
		if r.Status == Fail {
			pass = false
			for i, l := range strings.Split(r.Fix, "\n") {
				label := "fix:"
				if i > 0 {
					label = ""
				}
				fmt.Fprintf(w, "      %-*s  %-4s %s\n", width, "", label, l)
			}
		}
	}
	return pass
}
