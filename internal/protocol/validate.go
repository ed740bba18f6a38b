package protocol

import (
	"fmt"
	"math"
	"regexp"
	"strings"
)

// MaxContainerIDLength is the longest containerId accepted (Docker's limit).
const MaxContainerIDLength = 128

// MaxCommandIDLength bounds a command id: results echo it, and an id of
// megabytes would make every reply (and the dedup table) that large.
const MaxCommandIDLength = 256

// MinMemoryBytes is Docker's smallest memory limit.
const MinMemoryBytes = 6 << 20

// ReservedLabelPrefix marks the agent's own labels; eggConfig.labels cannot use it.
const ReservedLabelPrefix = "lormas."

var containerNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// ValidateContainerID checks a containerId against Docker's container-name
// rule; ".." is refused as well, so an id can never read as a path.
func ValidateContainerID(id string) error {
	switch {
	case id == "":
		return Errorf(CodeInvalid, "containerId is required")
	case len(id) > MaxContainerIDLength:
		return Errorf(CodeInvalid, "containerId is %d characters long; at most %d are allowed", len(id), MaxContainerIDLength)
	case !containerNameRE.MatchString(id) || strings.Contains(id, ".."):
		return Errorf(CodeInvalid, "containerId %q is not a valid container name: use letters, digits, '_', '.' and '-', starting with a letter or digit", id)
	}
	return nil
}

// Validate checks a command before it runs. Every problem is an *Error with
// code invalid whose text names the field and what is wrong with it.
func (c *Command) Validate() error {
	if len(c.ID) > MaxCommandIDLength {
		return Errorf(CodeInvalid, "id is %d bytes long; at most %d are allowed", len(c.ID), MaxCommandIDLength)
	}
	if c.Action == "" {
		return Errorf(CodeInvalid, "action is required")
	}
	if !c.Action.Known() {
		return Errorf(CodeInvalid, "unknown action %q", c.Action)
	}
	if c.Action != ActionList {
		if err := ValidateContainerID(c.ContainerID); err != nil {
			return err
		}
	}
	if c.Lines != nil && (*c.Lines < 0 || *c.Lines > MaxLogLines) {
		return Errorf(CodeInvalid, "lines must be between 0 and %d, got %d", MaxLogLines, *c.Lines)
	}
	if c.Timeout != nil && (*c.Timeout < 0 || *c.Timeout > 3600) {
		return Errorf(CodeInvalid, "timeout must be between 0 and 3600 seconds, got %d", *c.Timeout)
	}
	if _, err := ParseSince(c.Since); err != nil {
		return err
	}
	if c.Signal != "" && !validSignal(c.Signal) {
		return Errorf(CodeInvalid, "signal %q is not a signal name (SIGKILL, TERM) or number", c.Signal)
	}
	for k := range c.Environment {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return Errorf(CodeInvalid, "environment variable name %q is not valid", k)
		}
	}
	switch c.Action {
	case ActionCreate:
		if c.EggConfig == nil {
			return Errorf(CodeInvalid, "eggConfig is required for create")
		}
		if err := c.EggConfig.validate(); err != nil {
			return err
		}
	case ActionUpdate:
		if c.Resources == nil {
			return Errorf(CodeInvalid, "resources is required for update")
		}
	}
	if c.Resources != nil {
		if err := c.Resources.validate(); err != nil {
			return err
		}
	}
	return c.validateConsole()
}

func (e *EggConfig) validate() error {
	if strings.TrimSpace(e.Image) == "" {
		return Errorf(CodeInvalid, "eggConfig.image is required for create")
	}
	if strings.ContainsAny(e.Image, " \t\n\x00") {
		return Errorf(CodeInvalid, "eggConfig.image %q is not a valid image reference", e.Image)
	}
	for i, p := range e.Ports {
		if p.Container < 1 || p.Container > 65535 {
			return Errorf(CodeInvalid, "eggConfig.ports[%d].container must be a port from 1 to 65535, got %d", i, p.Container)
		}
		if p.Host < 0 || p.Host > 65535 {
			return Errorf(CodeInvalid, "eggConfig.ports[%d].host must be a port from 0 to 65535, got %d", i, p.Host)
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			return Errorf(CodeInvalid, "eggConfig.ports[%d].protocol must be tcp or udp, got %q", i, p.Protocol)
		}
	}
	for i, v := range e.Volumes {
		if v.Host == "" {
			return Errorf(CodeInvalid, "eggConfig.volumes[%d].host is required", i)
		}
		if !strings.HasPrefix(v.Container, "/") {
			return Errorf(CodeInvalid, "eggConfig.volumes[%d].container must be an absolute path, got %q", i, v.Container)
		}
		if strings.Contains(v.Container, ":") || strings.Contains(v.Host, ":") {
			return Errorf(CodeInvalid, "eggConfig.volumes[%d] must not contain ':'", i)
		}
	}
	switch e.RestartPolicy {
	case "", "no", "on-failure", "unless-stopped", "always":
	default:
		return Errorf(CodeInvalid, "eggConfig.restartPolicy must be no, on-failure, unless-stopped or always, got %q", e.RestartPolicy)
	}
	switch e.PullPolicy {
	case "", PullAlways, PullMissing, PullNever:
	default:
		return Errorf(CodeInvalid, "eggConfig.pullPolicy must be always, missing or never, got %q", e.PullPolicy)
	}
	if e.StopSignal != "" && !validSignal(e.StopSignal) {
		return Errorf(CodeInvalid, "eggConfig.stopSignal %q is not a signal name or number", e.StopSignal)
	}
	for k := range e.Labels {
		if strings.HasPrefix(k, ReservedLabelPrefix) {
			return Errorf(CodeInvalid, "eggConfig.labels: %q uses the reserved %q prefix", k, ReservedLabelPrefix)
		}
	}
	return nil
}

func (r *Resources) validate() error {
	if math.IsNaN(r.CPU) || r.CPU < 0 || r.CPU > 1024 {
		return Errorf(CodeInvalid, "resources.cpu must be a number of CPUs between 0 and 1024, got %v", r.CPU)
	}
	if r.CPU > 0 && r.CPU < 0.01 {
		return Errorf(CodeInvalid, "resources.cpu must be at least 0.01, got %v", r.CPU)
	}
	l, err := r.Limits()
	if err != nil {
		return err
	}
	if l.Memory > 0 && l.Memory < MinMemoryBytes {
		return Errorf(CodeInvalid, "resources.memory %q is below Docker's minimum of 6 MiB", r.Memory)
	}
	if r.Pids < 0 {
		return Errorf(CodeInvalid, "resources.pids must be positive, got %d", r.Pids)
	}
	return nil
}

var signalRE = regexp.MustCompile(`^(SIG)?[A-Z][A-Z0-9+-]*$|^[0-9]{1,2}$`)

func validSignal(s string) bool { return len(s) <= 16 && signalRE.MatchString(s) }

// unixSecondsRE is since in Unix seconds (ParseSince).
var unixSecondsRE = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?$`)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// String renders a command briefly for logs (never its environment).
func (c *Command) String() string {
	return fmt.Sprintf("%s %s (id %s)", c.Action, c.ContainerID, c.ID)
}
