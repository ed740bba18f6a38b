package protocol

import (
	"encoding/json"
	"time"
)

// Version is the protocolVersion the agent announces in agent_identify.
const Version = 1

// Message types, server -> agent and agent -> server.
const (
	TypePing            = "ping"
	TypePong            = "pong"
	TypeCommand         = "command"
	TypeCancel          = "cancel"
	TypeCommandResult   = "command_result"
	TypeAgentIdentify   = "agent_identify"
	TypeHeartbeat       = "heartbeat"
	TypeLog             = "log"
	TypeCommandProgress = "command_progress"
	TypeContainerEvent  = "container_event"
	TypeInventory       = "inventory"
)

// Capabilities lists the protocol extensions this implementation supports; the
// agent announces them in agent_identify.
var Capabilities = []string{
	"kill", "inspect", "list", "stats", "update", // extension actions
	"cancel", "follow", "timeout", "since", "timestamps", // extension fields
	"command_progress", "container_event", "inventory", // extension messages
	"warnings", "codes",
	"exec", "attach", "stats_follow", // console (docs/protocol.md)
}

// Message is any wire message. MessageType returns its "type" field.
type Message interface {
	MessageType() string
}

// Ping is sent by the server; the agent answers with Pong at once.
type Ping struct {
	Type string `json:"type"`
}

// Pong answers a Ping.
type Pong struct {
	Type string `json:"type"`
}

// Cancel ends a following log stream or aborts a pending command.
type Cancel struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
}

// AgentIdentify is the agent's first message on every connection.
type AgentIdentify struct {
	Type            string      `json:"type"`
	NodeName        string      `json:"nodeName"`
	Version         string      `json:"version"`
	ProtocolVersion int         `json:"protocolVersion,omitempty"`
	Capabilities    []string    `json:"capabilities,omitempty"`
	Hostname        string      `json:"hostname,omitempty"`
	OS              string      `json:"os,omitempty"`
	Arch            string      `json:"arch,omitempty"`
	Engine          *EngineInfo `json:"engine,omitempty"`
}

// EngineInfo describes the node's Docker Engine.
type EngineInfo struct {
	Version    string `json:"version"`
	APIVersion string `json:"apiVersion"`
}

// Heartbeat reports host resource usage every HEARTBEAT_INTERVAL.
type Heartbeat struct {
	Type      string        `json:"type"`
	NodeID    string        `json:"nodeId"`
	Resources HostResources `json:"resources"`
	Timestamp string        `json:"timestamp"`
}

// HostResources is the heartbeat's resources object. CPU and Memory are the
// seed's fields (busy fraction 0..1 and "512MB"); the rest are additive.
type HostResources struct {
	CPU              float64          `json:"cpu"`
	Memory           string           `json:"memory"`
	CPUCores         int              `json:"cpuCores,omitempty"`
	MemoryUsedBytes  uint64           `json:"memoryUsedBytes,omitempty"`
	MemoryTotalBytes uint64           `json:"memoryTotalBytes,omitempty"`
	DiskUsedBytes    uint64           `json:"diskUsedBytes,omitempty"`
	DiskTotalBytes   uint64           `json:"diskTotalBytes,omitempty"`
	Load1            float64          `json:"load1"`
	Load5            float64          `json:"load5"`
	Load15           float64          `json:"load15"`
	UptimeSeconds    uint64           `json:"uptimeSeconds,omitempty"`
	Containers       *ContainerCounts `json:"containers,omitempty"`
}

// ContainerCounts counts the containers this agent manages.
type ContainerCounts struct {
	Running int `json:"running"`
	Total   int `json:"total"`
}

// Status is a command_result status.
type Status string

// Result statuses.
const (
	StatusSuccess Status = "success"
	StatusError   Status = "error"
)

// CommandResult answers one command. Result holds one of the *Result types of
// this package when sent; a decoder sees it as generic JSON.
type CommandResult struct {
	Type      string   `json:"type"`
	CommandID string   `json:"commandId"`
	Status    Status   `json:"status"`
	Result    any      `json:"result,omitempty"`
	Error     string   `json:"error,omitempty"`
	Code      Code     `json:"code,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// LogMessage carries lines of a followed log stream (logs with follow:true).
// Either Line or Lines is set, or (extension) Gap alone: Gap lines are
// missing at this point of the stream, dropped by the agent because the
// server read slower than the container wrote; Stream and Timestamp then
// describe the first missing line.
type LogMessage struct {
	Type        string   `json:"type"`
	CommandID   string   `json:"commandId"`
	ContainerID string   `json:"containerId"`
	Stream      string   `json:"stream"`
	Line        string   `json:"line,omitempty"`
	Lines       []string `json:"lines,omitempty"`
	Gap         int      `json:"gap,omitempty"`
	Timestamp   string   `json:"timestamp"`
}

// CommandProgress reports a stage of long work (image pull, stop grace).
type CommandProgress struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
	Stage     string `json:"stage"`
	Detail    string `json:"detail,omitempty"`
}

// ContainerEvent relays a Docker event of a managed container.
type ContainerEvent struct {
	Type        string `json:"type"`
	ContainerID string `json:"containerId"`
	Action      string `json:"action"`
	ExitCode    *int   `json:"exitCode,omitempty"`
	OOMKilled   *bool  `json:"oomKilled,omitempty"`
	Timestamp   string `json:"timestamp"`
}

// Inventory lists every managed container, sent after each agent_identify.
type Inventory struct {
	Type       string          `json:"type"`
	Containers []InventoryItem `json:"containers"`
}

// InventoryItem is one managed container in an Inventory or list result.
type InventoryItem struct {
	ContainerID string `json:"containerId"`
	DockerID    string `json:"dockerId"`
	State       string `json:"state"`
	Image       string `json:"image"`
	CreatedAt   string `json:"createdAt"`
}

// Timestamp formats t as the protocol's RFC 3339 timestamp (UTC, milliseconds).
func Timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func (Ping) MessageType() string            { return TypePing }
func (Pong) MessageType() string            { return TypePong }
func (Cancel) MessageType() string          { return TypeCancel }
func (Command) MessageType() string         { return TypeCommand }
func (AgentIdentify) MessageType() string   { return TypeAgentIdentify }
func (Heartbeat) MessageType() string       { return TypeHeartbeat }
func (CommandResult) MessageType() string   { return TypeCommandResult }
func (LogMessage) MessageType() string      { return TypeLog }
func (CommandProgress) MessageType() string { return TypeCommandProgress }
func (ContainerEvent) MessageType() string  { return TypeContainerEvent }
func (Inventory) MessageType() string       { return TypeInventory }

// The MarshalJSON methods fill in "type", so a message can never go out with a
// missing or wrong type.

func (m Ping) MarshalJSON() ([]byte, error) {
	type t Ping
	m.Type = TypePing
	return json.Marshal(t(m))
}

func (m Pong) MarshalJSON() ([]byte, error) {
	type t Pong
	m.Type = TypePong
	return json.Marshal(t(m))
}

func (m Cancel) MarshalJSON() ([]byte, error) {
	type t Cancel
	m.Type = TypeCancel
	return json.Marshal(t(m))
}

func (m Command) MarshalJSON() ([]byte, error) {
	type t Command
	m.Type = TypeCommand
	return json.Marshal(t(m))
}

func (m AgentIdentify) MarshalJSON() ([]byte, error) {
	type t AgentIdentify
	m.Type = TypeAgentIdentify
	return json.Marshal(t(m))
}

func (m Heartbeat) MarshalJSON() ([]byte, error) {
	type t Heartbeat
	m.Type = TypeHeartbeat
	return json.Marshal(t(m))
}

func (m CommandResult) MarshalJSON() ([]byte, error) {
	type t CommandResult
	m.Type = TypeCommandResult
	return json.Marshal(t(m))
}

func (m LogMessage) MarshalJSON() ([]byte, error) {
	type t LogMessage
	m.Type = TypeLog
	return json.Marshal(t(m))
}

func (m CommandProgress) MarshalJSON() ([]byte, error) {
	type t CommandProgress
	m.Type = TypeCommandProgress
	return json.Marshal(t(m))
}

func (m ContainerEvent) MarshalJSON() ([]byte, error) {
	type t ContainerEvent
	m.Type = TypeContainerEvent
	return json.Marshal(t(m))
}

func (m Inventory) MarshalJSON() ([]byte, error) {
	type t Inventory
	m.Type = TypeInventory
	if m.Containers == nil {
		m.Containers = []InventoryItem{}
	}
	return json.Marshal(t(m))
}
