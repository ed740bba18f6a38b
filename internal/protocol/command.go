package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Action names a command's operation.
type Action string

// Seed actions.
const (
	ActionCreate  Action = "create"
	ActionStart   Action = "start"
	ActionStop    Action = "stop"
	ActionRestart Action = "restart"
	ActionDelete  Action = "delete"
	ActionLogs    Action = "logs"
)

// Extension actions.
const (
	ActionKill    Action = "kill"
	ActionInspect Action = "inspect"
	ActionList    Action = "list"
	ActionStats   Action = "stats"
	ActionUpdate  Action = "update"
)

// Actions lists every action this protocol version knows.
var Actions = []Action{
	ActionCreate, ActionStart, ActionStop, ActionRestart, ActionDelete, ActionLogs,
	ActionKill, ActionInspect, ActionList, ActionStats, ActionUpdate,
	ActionExec, ActionAttach,
}

// Known reports whether a is an action of this protocol version.
func (a Action) Known() bool {
	for _, k := range Actions {
		if a == k {
			return true
		}
	}
	return false
}

// DefaultLogLines is the number of lines a logs command returns without "lines".
const DefaultLogLines = 100

// MaxLogLines bounds "lines" so one command cannot ask for an unbounded reply.
const MaxLogLines = 10000

// Command is a server -> agent command. The seed's fields come first; the rest
// are extensions (docs/protocol.md). The same shape, without type and id, is the body
// of lormas-server's POST /api/nodes/{id}/commands.
type Command struct {
	Type        string            `json:"type"`
	ID          string            `json:"id,omitempty"`
	Action      Action            `json:"action"`
	ContainerID string            `json:"containerId,omitempty"`
	EggConfig   *EggConfig        `json:"eggConfig,omitempty"`
	Resources   *Resources        `json:"resources,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	Lines       *int              `json:"lines,omitempty"`

	Timeout    *int   `json:"timeout,omitempty"`    // seconds: stop/restart/kill grace
	Follow     bool   `json:"follow,omitempty"`     // logs: stream until stop or cancel
	Since      string `json:"since,omitempty"`      // logs: RFC 3339 time or Unix seconds
	Timestamps bool   `json:"timestamps,omitempty"` // logs: prefix lines with Docker's timestamps
	Signal     string `json:"signal,omitempty"`     // kill: default SIGKILL

	ConsoleOptions // exec, attach, stats follow (console.go)
}

// LogLines returns the number of log lines asked for, or the default.
func (c Command) LogLines() int {
	if c.Lines == nil || *c.Lines == 0 {
		return DefaultLogLines
	}
	return *c.Lines
}

// EggConfig describes the container to create.
type EggConfig struct {
	Image         string            `json:"image"`
	Ports         []Port            `json:"ports,omitempty"`
	Volumes       []Volume          `json:"volumes,omitempty"`
	Command       []string          `json:"command,omitempty"`
	Entrypoint    []string          `json:"entrypoint,omitempty"`
	WorkingDir    string            `json:"workingDir,omitempty"`
	User          string            `json:"user,omitempty"`
	TTY           *bool             `json:"tty,omitempty"` // default true, as the seed
	StopSignal    string            `json:"stopSignal,omitempty"`
	RestartPolicy string            `json:"restartPolicy,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	PullPolicy    string            `json:"pullPolicy,omitempty"`
	OpenStdin     bool              `json:"openStdin,omitempty"` // keep the main process's stdin open for attach input
}

// UseTTY reports whether the container gets a TTY (the seed's default: yes).
func (e *EggConfig) UseTTY() bool { return e.TTY == nil || *e.TTY }

// Pull policies.
const (
	PullAlways  = "always"
	PullMissing = "missing"
	PullNever   = "never"
)

// Port publishes a container port on the host.
type Port struct {
	Host      int    `json:"host"`
	Container int    `json:"container"`
	Protocol  string `json:"protocol,omitempty"` // "tcp" (default) or "udp"
	HostIP    string `json:"hostIp,omitempty"`
}

// Proto returns the port's protocol, defaulting to tcp.
func (p Port) Proto() string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}

// Volume mounts a host path (absolute) or a named Docker volume (plain name).
type Volume struct {
	Host      string `json:"host"`
	Container string `json:"container"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// Resources are a container's limits. Memory and Disk use the size syntax of
// ParseSize; a JSON number is taken as bytes.
type Resources struct {
	CPU    float64 `json:"cpu,omitempty"`
	Memory Size    `json:"memory,omitempty"`
	Disk   Size    `json:"disk,omitempty"`
	Pids   int64   `json:"pids,omitempty"`
}

// Size is a byte size as written on the wire ("512m", "1GiB", "1048576").
// It decodes from a JSON string or number and is validated by ParseSize.
type Size string

// UnmarshalJSON accepts a string or a non-negative JSON number of bytes.
func (s *Size) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] != '"' && !bytes.Equal(b, []byte("null")) {
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*s = Size(n.String())
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return err
	}
	*s = Size(str)
	return nil
}

// Bytes parses the size; an empty size is 0.
func (s Size) Bytes() (int64, error) {
	if s == "" {
		return 0, nil
	}
	return ParseSize(string(s))
}

// CreateResult is the result of create.
type CreateResult struct {
	ContainerID string `json:"containerId"`
}

// MessageResult is the result of start, stop, restart, delete and kill.
type MessageResult struct {
	Message       string `json:"message"`
	AlreadyAbsent bool   `json:"alreadyAbsent,omitempty"`
}

// The seed's result messages.
const (
	MsgStarted   = "Container started"
	MsgStopped   = "Container stopped"
	MsgRestarted = "Container restarted"
	MsgDeleted   = "Container deleted"
	MsgKilled    = "Container killed"
	MsgUpdated   = "Container updated"
)

// LogsResult is the result of logs. Dropped counts the lines a follow stream
// read from the engine and did not send: dropped while the server read
// slower than the container wrote (each run of them marked in the stream by
// a log message with gap), or still buffered when the stream was cancelled
// or its connection lost. Sent counts the lines it wrote to the connection
// (follow streams only): read = sent + dropped, and a server that received
// fewer than sent lost the rest in transit with a connection.
type LogsResult struct {
	Logs    []string `json:"logs"`
	Dropped int      `json:"dropped,omitempty"`
	Sent    int      `json:"sent,omitempty"`
}

// ListResult is the result of list.
type ListResult struct {
	Containers []InventoryItem `json:"containers"`
}

// InspectResult is the result of inspect.
type InspectResult struct {
	ContainerID  string          `json:"containerId"`
	DockerID     string          `json:"dockerId"`
	Image        string          `json:"image"`
	State        string          `json:"state"`
	Running      bool            `json:"running"`
	ExitCode     int             `json:"exitCode"`
	OOMKilled    bool            `json:"oomKilled"`
	Error        string          `json:"error,omitempty"`
	StartedAt    string          `json:"startedAt,omitempty"`
	FinishedAt   string          `json:"finishedAt,omitempty"`
	RestartCount int             `json:"restartCount"`
	Health       string          `json:"health,omitempty"`
	Limits       ContainerLimits `json:"limits"`
	TTY          bool            `json:"tty,omitempty"`       // has a terminal (attach: raw output)
	OpenStdin    bool            `json:"openStdin,omitempty"` // takes console input (attach)
}

// ContainerLimits are the resource limits Docker reports for a container.
type ContainerLimits struct {
	NanoCPUs    int64   `json:"nanoCpus"`
	CPU         float64 `json:"cpu"`
	MemoryBytes int64   `json:"memoryBytes"`
	PidsLimit   int64   `json:"pidsLimit"`
}

// StatsResult is one sample of a container's resource usage.
type StatsResult struct {
	ContainerID      string  `json:"containerId"`
	CPUPercent       float64 `json:"cpuPercent"` // as docker stats: 100 = one full CPU
	MemoryUsageBytes uint64  `json:"memoryUsageBytes"`
	MemoryLimitBytes uint64  `json:"memoryLimitBytes"`
	NetworkRxBytes   uint64  `json:"networkRxBytes"`
	NetworkTxBytes   uint64  `json:"networkTxBytes"`
	BlockReadBytes   uint64  `json:"blockReadBytes"`
	BlockWriteBytes  uint64  `json:"blockWriteBytes"`
	Pids             uint64  `json:"pids"`
	Timestamp        string  `json:"timestamp"`
}

// FormatMemory renders bytes in the seed's heartbeat memory form, "512MB"
// (binary megabytes, rounded down).
func FormatMemory(bytes uint64) string {
	return strconv.FormatUint(bytes>>20, 10) + "MB"
}
