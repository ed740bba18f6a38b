package protocol

import (
	"strconv"
	"strings"
	"time"
)

// The arguments of each container operation, taken from a command that
// passed Validate: the agent validates a command once, when it arrives, and
// hands the container runtime only these, so the runtime executes them
// without checking the command again. They are not on the wire.
//
// The methods that take them from a Command return an error only for a
// command that did not pass Validate; they never guess a value.

// Limits are a container's resource limits with sizes in bytes; zero leaves
// a limit unset.
type Limits struct {
	CPU    float64 // CPUs
	Memory int64   // bytes
	Disk   int64   // bytes
	Pids   int64
}

// Limits parses r's sizes.
func (r *Resources) Limits() (Limits, error) {
	if r == nil {
		return Limits{}, nil
	}
	mem, err := r.Memory.Bytes()
	if err != nil {
		return Limits{}, Errorf(CodeInvalid, "resources.memory: %w", err)
	}
	disk, err := r.Disk.Bytes()
	if err != nil {
		return Limits{}, Errorf(CodeInvalid, "resources.disk: %w", err)
	}
	return Limits{CPU: r.CPU, Memory: mem, Disk: disk, Pids: r.Pids}, nil
}

// CreateParams are the arguments of create.
type CreateParams struct {
	ContainerID string
	Egg         EggConfig
	Limits      Limits
	Environment map[string]string
}

// CreateParams returns the arguments of a validated create command.
func (c *Command) CreateParams() (CreateParams, error) {
	if c.EggConfig == nil {
		return CreateParams{}, Errorf(CodeInvalid, "eggConfig is required for create")
	}
	limits, err := c.Resources.Limits()
	if err != nil {
		return CreateParams{}, err
	}
	return CreateParams{ContainerID: c.ContainerID, Egg: *c.EggConfig, Limits: limits, Environment: c.Environment}, nil
}

// UpdateLimits returns the limits a validated update command sets.
func (c *Command) UpdateLimits() (Limits, error) { return c.Resources.Limits() }

// LogsParams are the arguments of logs, followed or not.
type LogsParams struct {
	ContainerID string
	Lines       int       // the last Lines lines (LogLines: the default when the command has none)
	Since       time.Time // only lines since then; zero: all
	Timestamps  bool      // lines keep the engine's timestamps
}

// LogsParams returns the arguments of a validated logs command.
func (c *Command) LogsParams() (LogsParams, error) {
	since, err := ParseSince(c.Since)
	if err != nil {
		return LogsParams{}, err
	}
	return LogsParams{ContainerID: c.ContainerID, Lines: c.LogLines(), Since: since, Timestamps: c.Timestamps}, nil
}

// ExecParams are the arguments of exec, run to completion or interactive.
type ExecParams struct {
	ContainerID string
	Cmd         []string
	User        string
	WorkingDir  string
	Env         map[string]string
	TTY         bool
	Cols, Rows  int           // the initial terminal size; 0: the engine's
	Timeout     time.Duration // of an exec without stdin (ExecTimeout)
}

// ExecParams returns the arguments of a validated exec command.
func (c *Command) ExecParams() ExecParams {
	return ExecParams{
		ContainerID: c.ContainerID, Cmd: c.Cmd, User: c.User, WorkingDir: c.WorkingDir, Env: c.Env,
		TTY: c.TTY, Cols: c.Cols, Rows: c.Rows, Timeout: time.Duration(c.ExecTimeout()) * time.Second,
	}
}

// AttachParams are the arguments of attach.
type AttachParams struct {
	ContainerID string
	Lines       int // log lines replayed first; 0: none
}

// AttachParams returns the arguments of a validated attach command.
func (c *Command) AttachParams() AttachParams {
	p := AttachParams{ContainerID: c.ContainerID}
	if c.Lines != nil {
		p.Lines = *c.Lines
	}
	return p
}

// StatsParams are the arguments of stats with follow.
type StatsParams struct {
	ContainerID string
	Interval    time.Duration // between samples (StatsInterval)
}

// StatsParams returns the arguments of a validated stats command with follow.
func (c *Command) StatsParams() StatsParams {
	return StatsParams{ContainerID: c.ContainerID, Interval: time.Duration(c.StatsInterval() * float64(time.Second))}
}

// maxSinceUnix bounds since in Unix seconds (the year 2242): Docker's own
// bound for the seconds of a time filter.
const maxSinceUnix = 4 * (1<<31 - 1)

// ParseSince parses the since field: an RFC 3339 time, or Unix seconds with
// up to nine decimals. "" is the zero time (no since).
func ParseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	bad := Errorf(CodeInvalid, "since must be an RFC 3339 time or Unix seconds, got %q", truncate(s, 64))
	if len(s) > 64 {
		return time.Time{}, bad
	}
	if unixSecondsRE.MatchString(s) {
		whole, frac, _ := strings.Cut(s, ".")
		sec, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || sec >= maxSinceUnix {
			return time.Time{}, bad
		}
		var nsec int64
		if frac != "" {
			nsec, _ = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		}
		return time.Unix(sec, nsec), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, bad
	}
	return t, nil
}
