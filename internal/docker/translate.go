package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"slices"
	"strconv"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// noNewPrivileges keeps setuid binaries in the image from gaining privileges.
const noNewPrivileges = "no-new-privileges:true"

// createSpec is a create command translated into Docker's terms.
type createSpec struct {
	Name    string // the containerId
	Config  *container.Config
	Host    *container.HostConfig
	Volumes []string       // named volumes to create (with the agent's labels) first
	Binds   []policy.Mount // bind sources to make (policy.Volumes.Ensure) first
	Disk    int64          // requested disk limit in bytes; applied by limitDisk
	Hash    string         // of the normalised request, also in the LabelSpec label
}

// translateOptions is the node-local part of a translation.
type translateOptions struct {
	Owner     policy.Ownership
	Volumes   *policy.Volumes
	PidsLimit int64             // when the command sets none; 0 = unlimited
	LogOpts   map[string]string // json-file options
}

// translate turns a create command's arguments into the container's Docker
// configuration. It decides everything the server may ask for and enforces
// what it may not: the container never runs privileged, never joins a host
// namespace, gets no devices and no added capabilities, cannot gain
// privileges, has bounded processes and rotated logs, and mounts only what the
// volume policy approves.
func translate(p protocol.CreateParams, o translateOptions) (*createSpec, error) {
	egg, res := &p.Egg, p.Limits
	spec := &createSpec{Name: p.ContainerID, Disk: res.Disk, Hash: requestHash(p)}
	labels := make(map[string]string, len(egg.Labels)+4)
	for k, v := range egg.Labels {
		labels[k] = v
	}
	// The agent's labels are written last: they win over anything in the egg.
	for k, v := range o.Owner.Labels(p.ContainerID) {
		labels[k] = v
	}
	labels[policy.LabelSpec] = spec.Hash

	cfg := &container.Config{
		Image:        egg.Image,
		Labels:       labels,
		Env:          envList(p.Environment),
		Tty:          egg.UseTTY(),
		Cmd:          slices.Clone(egg.Command),
		Entrypoint:   slices.Clone(egg.Entrypoint),
		WorkingDir:   egg.WorkingDir,
		User:         egg.User,
		StopSignal:   egg.StopSignal,
		ExposedPorts: nat.PortSet{},
		// openStdin: the main process's stdin stays open for console input
		// (attach); StdinOnce false so a detaching client never closes it.
		OpenStdin:   egg.OpenStdin,
		AttachStdin: egg.OpenStdin,
		StdinOnce:   false,
	}
	host := &container.HostConfig{
		PortBindings:  nat.PortMap{},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(egg.RestartPolicy)},
		SecurityOpt:   []string{noNewPrivileges},
		LogConfig:     container.LogConfig{Type: "json-file", Config: cloneMap(o.LogOpts)},
		Privileged:    false,
	}
	if host.RestartPolicy.Name == "" {
		host.RestartPolicy.Name = container.RestartPolicyDisabled
	}

	if res.CPU > 0 {
		host.NanoCPUs = int64(math.Round(res.CPU * 1e9))
	}
	if res.Memory > 0 {
		host.Memory = res.Memory
		host.MemorySwap = res.Memory // memory+swap equal to memory: no swap
	}
	pids := o.PidsLimit
	if res.Pids > 0 {
		pids = res.Pids
	}
	if pids > 0 {
		host.PidsLimit = &pids
	}

	for _, p := range egg.Ports {
		port := nat.Port(strconv.Itoa(p.Container) + "/" + p.Proto())
		cfg.ExposedPorts[port] = struct{}{}
		hostPort := ""
		if p.Host > 0 {
			hostPort = strconv.Itoa(p.Host)
		}
		host.PortBindings[port] = append(host.PortBindings[port], nat.PortBinding{HostIP: p.HostIP, HostPort: hostPort})
	}

	// Mounts, not Binds: Docker creates a missing Binds source itself,
	// following symlinks on the way; a missing Mounts source is an error.
	// The agent makes each bind source itself (Ensure) before the create.
	for i, v := range egg.Volumes {
		m, err := o.Volumes.Check(v.Host)
		if err != nil {
			return nil, protocol.Errorf(protocol.CodeOf(err), "eggConfig.volumes[%d]: %w", i, err)
		}
		mt := mount.Mount{Type: mount.TypeVolume, Source: m.Source, Target: v.Container, ReadOnly: v.ReadOnly}
		switch m.Kind {
		case policy.BindMount:
			mt.Type = mount.TypeBind
			if !slices.Contains(spec.Binds, m) {
				spec.Binds = append(spec.Binds, m)
			}
		case policy.NamedVolume:
			if !slices.Contains(spec.Volumes, m.Source) {
				spec.Volumes = append(spec.Volumes, m.Source)
			}
		}
		host.Mounts = append(host.Mounts, mt)
	}

	spec.Config, spec.Host = cfg, host
	return spec, nil
}

// limitDisk applies the requested disk limit where the storage driver can
// enforce it. Otherwise, in warn mode it leaves the limit off and returns a
// warning; in strict mode it refuses the create.
func (s *createSpec) limitDisk(support storageSupport, mode string) (warnings []string, err error) {
	if s.Disk <= 0 {
		return nil, nil
	}
	if support.Supported {
		s.Host.StorageOpt = map[string]string{"size": strconv.FormatInt(s.Disk, 10)}
		return nil, nil
	}
	if mode == DiskLimitStrict {
		return nil, protocol.Errorf(protocol.CodeInvalid,
			"create container %s: resources.disk cannot be enforced: %s (DISK_LIMIT_MODE=strict)", s.Name, support.Reason)
	}
	return []string{"disk limit not applied: " + support.Reason}, nil
}

// envList renders the environment as Docker's KEY=value list, sorted so the
// same map always gives the same configuration.
func envList(env map[string]string) []string {
	if len(env) == 0 {
		return nil
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// normalRequest is a create command with every default made explicit and
// every size in bytes, so requests that mean the same hash the same.
type normalRequest struct {
	Image         string            `json:"image"`
	Ports         []protocol.Port   `json:"ports"`
	Volumes       []protocol.Volume `json:"volumes"`
	Command       []string          `json:"command"`
	Entrypoint    []string          `json:"entrypoint"`
	WorkingDir    string            `json:"workingDir"`
	User          string            `json:"user"`
	TTY           bool              `json:"tty"`
	StopSignal    string            `json:"stopSignal"`
	RestartPolicy string            `json:"restartPolicy"`
	Labels        map[string]string `json:"labels"`
	Environment   map[string]string `json:"environment"`
	CPU           float64           `json:"cpu"`
	Memory        int64             `json:"memory"`
	Disk          int64             `json:"disk"`
	Pids          int64             `json:"pids"`
	OpenStdin     bool              `json:"openStdin,omitempty"` // omitted when false: older hashes stay valid
}

// requestHash returns the hex SHA-256 of the normalised create request. The
// pull policy is left out: it decides how the image is fetched, not what the
// container is. Environment values enter only through the hash.
func requestHash(p protocol.CreateParams) string {
	egg := &p.Egg
	n := normalRequest{
		Image:         egg.Image,
		Command:       egg.Command,
		Entrypoint:    egg.Entrypoint,
		WorkingDir:    egg.WorkingDir,
		User:          egg.User,
		TTY:           egg.UseTTY(),
		StopSignal:    egg.StopSignal,
		RestartPolicy: egg.RestartPolicy,
		Labels:        egg.Labels,
		Environment:   p.Environment,
		OpenStdin:     egg.OpenStdin,
	}
	if n.RestartPolicy == "" {
		n.RestartPolicy = "no"
	}
	for _, p := range egg.Ports {
		p.Protocol = p.Proto()
		n.Ports = append(n.Ports, p)
	}
	n.Volumes = egg.Volumes
	n.CPU, n.Memory, n.Disk, n.Pids = p.Limits.CPU, p.Limits.Memory, p.Limits.Disk, p.Limits.Pids
	// Absent and empty mean the same.
	if len(n.Command) == 0 {
		n.Command = nil
	}
	if len(n.Entrypoint) == 0 {
		n.Entrypoint = nil
	}
	if len(n.Volumes) == 0 {
		n.Volumes = nil
	}
	if len(n.Labels) == 0 {
		n.Labels = nil
	}
	if len(n.Environment) == 0 {
		n.Environment = nil
	}
	b, err := json.Marshal(n)
	if err != nil {
		// Every field is a plain value; Marshal cannot fail.
		panic("docker: marshal create request: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
