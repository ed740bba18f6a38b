package protocol

import (
	"encoding/json"
	"strings"
)

// Console, exec and live stats (docs/protocol.md): the actions, the fields of their
// commands, the messages that stream their input and output, and their
// results.

// Console actions.
const (
	ActionExec   Action = "exec"
	ActionAttach Action = "attach"
)

// Console message types: stdin and resize go server -> agent, stream and
// stats agent -> server.
const (
	TypeStream = "stream"
	TypeStdin  = "stdin"
	TypeResize = "resize"
	TypeStats  = "stats"
)

// Stream names of console output.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// Console limits and defaults.
const (
	// DefaultExecTimeout is the timeout of an exec without stdin, seconds.
	DefaultExecTimeout = 60
	// ExecOutputCap is how much raw output of each stream a
	// run-to-completion exec keeps at most; ExecOutputEncodedCap bounds
	// both together as JSON (execoutput.go). The rest is read and
	// discarded (truncated: true).
	ExecOutputCap = 1 << 20
	// DefaultStatsInterval is the interval of a followed stats stream, seconds.
	DefaultStatsInterval = 1
	// MaxStatsInterval bounds interval.
	MaxStatsInterval = 3600
	// maxCmdBytes bounds the total size of an exec's cmd, env, user and
	// workingDir (Docker's own request limit is far larger; a command line
	// of a megabyte is a mistake or an attack).
	maxCmdBytes = 256 << 10
	// maxTermSize bounds cols and rows (a terminal's size is 16-bit).
	maxTermSize = 65535
)

// ConsoleOptions are the fields of exec, attach and stats commands. They are
// embedded in Command, so they appear at its top level on the wire.
type ConsoleOptions struct {
	Cmd        []string          `json:"cmd,omitempty"`        // exec: the process and its arguments
	User       string            `json:"user,omitempty"`       // exec: user[:group] to run as
	WorkingDir string            `json:"workingDir,omitempty"` // exec: working directory
	Env        map[string]string `json:"env,omitempty"`        // exec: extra environment
	TTY        bool              `json:"tty,omitempty"`        // exec: allocate a terminal
	Stdin      bool              `json:"stdin,omitempty"`      // exec: interactive session with input
	Cols       int               `json:"cols,omitempty"`       // exec with tty: initial terminal width
	Rows       int               `json:"rows,omitempty"`       // exec with tty: initial terminal height
	Interval   *float64          `json:"interval,omitempty"`   // stats with follow: seconds between samples
}

// ExecTimeout is the timeout of an exec without stdin, in seconds.
func (c Command) ExecTimeout() int {
	if c.Timeout == nil {
		return DefaultExecTimeout
	}
	return *c.Timeout
}

// StatsInterval is the interval of a followed stats stream, in seconds.
func (c Command) StatsInterval() float64 {
	if c.Interval == nil {
		return DefaultStatsInterval
	}
	return *c.Interval
}

// IsSession reports whether the command streams until it ends (an exec, an
// attach, or stats with follow): such commands count against MAX_SESSIONS
// and do not hold their container's command queue while they run.
func (c Command) IsSession() bool {
	switch c.Action {
	case ActionExec, ActionAttach:
		return true
	case ActionStats:
		return c.Follow
	}
	return false
}

// Interactive reports whether the command takes input (stdin and resize
// messages) while it runs.
func (c Command) Interactive() bool {
	return c.Action == ActionAttach || (c.Action == ActionExec && c.Stdin)
}

// validateConsole checks the console fields of a command (called by
// Validate).
func (c *Command) validateConsole() error {
	switch c.Action {
	case ActionExec:
		if len(c.Cmd) == 0 {
			return Errorf(CodeInvalid, "cmd is required for exec: the process to run and its arguments, e.g. [\"sh\"]")
		}
		if c.Cmd[0] == "" {
			return Errorf(CodeInvalid, "cmd[0] (the program to run) is empty")
		}
		size := len(c.User) + len(c.WorkingDir)
		for i, a := range c.Cmd {
			if strings.ContainsRune(a, 0) {
				return Errorf(CodeInvalid, "cmd[%d] contains a NUL byte", i)
			}
			size += len(a)
		}
		for k, v := range c.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
				return Errorf(CodeInvalid, "env variable %q is not valid (empty name, '=' or NUL)", truncate(k, 64))
			}
			size += len(k) + len(v)
		}
		if size > maxCmdBytes {
			return Errorf(CodeInvalid, "cmd, env, user and workingDir add up to %d bytes; at most %d are allowed", size, maxCmdBytes)
		}
		if strings.ContainsRune(c.User, 0) || strings.ContainsRune(c.WorkingDir, 0) {
			return Errorf(CodeInvalid, "user and workingDir must not contain NUL bytes")
		}
		if c.WorkingDir != "" && !strings.HasPrefix(c.WorkingDir, "/") {
			return Errorf(CodeInvalid, "workingDir must be an absolute path, got %q", truncate(c.WorkingDir, 64))
		}
		if c.Cols < 0 || c.Cols > maxTermSize || c.Rows < 0 || c.Rows > maxTermSize {
			return Errorf(CodeInvalid, "cols and rows must be between 0 and %d, got %d and %d", maxTermSize, c.Cols, c.Rows)
		}
		if c.Timeout != nil {
			if c.Stdin {
				return Errorf(CodeInvalid, "timeout applies only to exec without stdin; an interactive session ends with cancel")
			}
			if *c.Timeout < 1 {
				return Errorf(CodeInvalid, "timeout must be at least 1 second, got %d", *c.Timeout)
			}
		}
		if c.Follow {
			return Errorf(CodeInvalid, "follow does not apply to exec (use stdin: true for an interactive session)")
		}
	case ActionAttach:
		if len(c.Cmd) > 0 || c.Follow {
			return Errorf(CodeInvalid, "attach takes no cmd or follow: it attaches to the container's main process")
		}
	case ActionStats:
		if c.Interval != nil {
			if !c.Follow {
				return Errorf(CodeInvalid, "interval applies only to stats with follow: true")
			}
			if v := *c.Interval; !(v >= 1 && v <= MaxStatsInterval) { // also refuses NaN
				return Errorf(CodeInvalid, "interval must be between 1 and %d seconds, got %v", MaxStatsInterval, v)
			}
		}
	}
	if c.Action != ActionExec && (len(c.Cmd) > 0 || c.Stdin || c.TTY) {
		return Errorf(CodeInvalid, "cmd, stdin and tty apply only to exec")
	}
	return nil
}

// Stream carries raw output of an exec or attach session, base64 on the wire.
type Stream struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
	Stream    string `json:"stream"`
	Data      []byte `json:"data"`
}

// Stdin is input for an interactive session: Data (base64 on the wire), or
// EOF to close the process's stdin.
type Stdin struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
	Data      []byte `json:"data,omitempty"`
	EOF       bool   `json:"eof,omitempty"`
}

// Resize sets the terminal size of an interactive session.
type Resize struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
	Cols      int    `json:"cols"`
	Rows      int    `json:"rows"`
}

// Valid reports whether the size is one a terminal can have.
func (r Resize) Valid() bool {
	return r.Cols > 0 && r.Cols <= maxTermSize && r.Rows > 0 && r.Rows <= maxTermSize
}

// StatsSample is one sample of a followed stats stream. CPU is in CPUs
// (1.0 = one full CPU) over the interval; MemoryBytes excludes the page
// cache; MemoryLimitBytes is the limit, or the host's memory without one.
type StatsSample struct {
	Type             string  `json:"type"`
	CommandID        string  `json:"commandId"`
	ContainerID      string  `json:"containerId"`
	CPU              float64 `json:"cpu"`
	MemoryBytes      uint64  `json:"memoryBytes"`
	MemoryLimitBytes uint64  `json:"memoryLimitBytes"`
	NetRxBytes       uint64  `json:"netRxBytes"`
	NetTxBytes       uint64  `json:"netTxBytes"`
	BlockReadBytes   uint64  `json:"blockReadBytes"`
	BlockWriteBytes  uint64  `json:"blockWriteBytes"`
	Pids             uint64  `json:"pids"`
	Timestamp        string  `json:"timestamp"`
}

// ExecResult is the result of an exec without stdin. Stdout and Stderr are
// the output as UTF-8 text (invalid sequences replaced), cut by the rule of
// ExecOutput; Truncated reports a cut.
type ExecResult struct {
	ExitCode  int    `json:"exitCode"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
}

// SessionResult is the final result of an interactive exec or an attach:
// ExitCode when the process (attach: the container) ended, Detached when the
// session ended first. InputDroppedBytes counts input that could not be
// delivered (refused by ALLOW_CONSOLE_INPUT, no stdin, or over the input
// buffer); it is never silent.
type SessionResult struct {
	ExitCode          *int  `json:"exitCode,omitempty"`
	Detached          bool  `json:"detached,omitempty"`
	InputDroppedBytes int64 `json:"inputDroppedBytes,omitempty"`
}

// StatsFollowResult is the final result of stats with follow.
type StatsFollowResult struct {
	Samples int `json:"samples"`
}

func (Stream) MessageType() string      { return TypeStream }
func (Stdin) MessageType() string       { return TypeStdin }
func (Resize) MessageType() string      { return TypeResize }
func (StatsSample) MessageType() string { return TypeStats }

func (m Stream) MarshalJSON() ([]byte, error) {
	type t Stream
	m.Type = TypeStream
	if m.Data == nil {
		m.Data = []byte{}
	}
	return json.Marshal(t(m))
}

func (m Stdin) MarshalJSON() ([]byte, error) {
	type t Stdin
	m.Type = TypeStdin
	return json.Marshal(t(m))
}

func (m Resize) MarshalJSON() ([]byte, error) {
	type t Resize
	m.Type = TypeResize
	return json.Marshal(t(m))
}

func (m StatsSample) MarshalJSON() ([]byte, error) {
	type t StatsSample
	m.Type = TypeStats
	return json.Marshal(t(m))
}

// decodeConsole decodes the console message types; ok is false for any
// other type.
func decodeConsole(typ string, frame []byte) (m Message, ok bool, err error) {
	switch typ {
	case TypeStream:
		m, err = decodeAs[Stream](frame)
	case TypeStdin:
		m, err = decodeAs[Stdin](frame)
	case TypeResize:
		m, err = decodeAs[Resize](frame)
	case TypeStats:
		m, err = decodeAs[StatsSample](frame)
	default:
		return nil, false, nil
	}
	return m, true, err
}
