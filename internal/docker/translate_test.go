package docker

import (
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

func testTranslateOptions(t *testing.T) (translateOptions, string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vols, err := policy.NewVolumes([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	if err := vols.MarkVisible(root); err != nil {
		t.Fatal(err)
	}
	return translateOptions{
		Owner:     policy.Ownership{NodeID: "node-7"},
		Volumes:   vols,
		PidsLimit: 512,
		LogOpts:   map[string]string{"max-size": "10m", "max-file": "3"},
	}, root
}

func createCmd(egg *protocol.EggConfig, res *protocol.Resources, env map[string]string) *protocol.Command {
	return &protocol.Command{Action: protocol.ActionCreate, ContainerID: "web-1", EggConfig: egg, Resources: res, Environment: env}
}

// paramsOf is what the agent passes the Engine for cmd, here without
// validating cmd first: translate must hold its ground for a command that
// skipped validation.
func paramsOf(t testing.TB, cmd *protocol.Command) protocol.CreateParams {
	t.Helper()
	p, err := cmd.CreateParams()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func boolp(b bool) *bool { return &b }

func TestTranslateResources(t *testing.T) {
	o, _ := testTranslateOptions(t)
	tests := []struct {
		name               string
		res                *protocol.Resources
		wantNano, wantMem  int64
		wantSwap, wantPids int64
	}{
		{"none", nil, 0, 0, 0, 512},
		{"one cpu", &protocol.Resources{CPU: 1.0}, 1e9, 0, 0, 512},
		{"half a cpu", &protocol.Resources{CPU: 0.5}, 5e8, 0, 0, 512},
		{"fraction rounds", &protocol.Resources{CPU: 0.333333333333}, 333333333, 0, 0, 512},
		{"two and a half", &protocol.Resources{CPU: 2.5}, 2_500_000_000, 0, 0, 512},
		{"512m", &protocol.Resources{Memory: "512m"}, 0, 536870912, 536870912, 512},
		{"512MB", &protocol.Resources{Memory: "512MB"}, 0, 536870912, 536870912, 512},
		{"1.5g", &protocol.Resources{Memory: "1.5g"}, 0, 1610612736, 1610612736, 512},
		{"bytes", &protocol.Resources{Memory: "67108864"}, 0, 67108864, 67108864, 512},
		{"pids override", &protocol.Resources{Pids: 64}, 0, 0, 0, 64},
		{"all", &protocol.Resources{CPU: 2, Memory: "1GiB", Pids: 100}, 2e9, 1 << 30, 1 << 30, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := translate(paramsOf(t, createCmd(&protocol.EggConfig{Image: "nginx"}, tt.res, nil)), o)
			if err != nil {
				t.Fatal(err)
			}
			h := spec.Host
			if h.NanoCPUs != tt.wantNano {
				t.Errorf("NanoCPUs = %d, want %d", h.NanoCPUs, tt.wantNano)
			}
			if h.CpusetCpus != "" || h.CPUQuota != 0 || h.CPUPeriod != 0 {
				t.Errorf("CpusetCpus/CPUQuota/CPUPeriod = %q/%d/%d, want unset", h.CpusetCpus, h.CPUQuota, h.CPUPeriod)
			}
			if h.Memory != tt.wantMem || h.MemorySwap != tt.wantSwap {
				t.Errorf("Memory/MemorySwap = %d/%d, want %d/%d", h.Memory, h.MemorySwap, tt.wantMem, tt.wantSwap)
			}
			if h.PidsLimit == nil || *h.PidsLimit != tt.wantPids {
				t.Errorf("PidsLimit = %v, want %d", h.PidsLimit, tt.wantPids)
			}
		})
	}
}

func TestTranslateUnlimitedPids(t *testing.T) {
	o, _ := testTranslateOptions(t)
	o.PidsLimit = 0
	spec, err := translate(paramsOf(t, createCmd(&protocol.EggConfig{Image: "nginx"}, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Host.PidsLimit != nil {
		t.Errorf("PidsLimit = %d, want nil (unlimited)", *spec.Host.PidsLimit)
	}
}

func TestTranslatePorts(t *testing.T) {
	o, _ := testTranslateOptions(t)
	egg := &protocol.EggConfig{Image: "nginx", Ports: []protocol.Port{
		{Host: 8080, Container: 80},
		{Host: 8443, Container: 443, Protocol: "tcp", HostIP: "127.0.0.1"},
		{Host: 5353, Container: 53, Protocol: "udp"},
		{Host: 5354, Container: 53, Protocol: "udp", HostIP: "127.0.0.1"},
		{Host: 0, Container: 9000},
	}}
	spec, err := translate(paramsOf(t, createCmd(egg, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	wantExposed := nat.PortSet{"80/tcp": {}, "443/tcp": {}, "53/udp": {}, "9000/tcp": {}}
	if !maps.Equal(spec.Config.ExposedPorts, wantExposed) {
		t.Errorf("ExposedPorts = %v, want %v", spec.Config.ExposedPorts, wantExposed)
	}
	wantBindings := nat.PortMap{
		"80/tcp":   {{HostPort: "8080"}},
		"443/tcp":  {{HostIP: "127.0.0.1", HostPort: "8443"}},
		"53/udp":   {{HostPort: "5353"}, {HostIP: "127.0.0.1", HostPort: "5354"}},
		"9000/tcp": {{HostPort: ""}},
	}
	if !maps.EqualFunc(spec.Host.PortBindings, wantBindings, slices.Equal) {
		t.Errorf("PortBindings = %v, want %v", spec.Host.PortBindings, wantBindings)
	}
}

func TestTranslateEnvAndLabels(t *testing.T) {
	o, _ := testTranslateOptions(t)
	egg := &protocol.EggConfig{Image: "nginx", Labels: map[string]string{"team": "web", "tier": "front"}}
	spec, err := translate(paramsOf(t, createCmd(egg, nil, map[string]string{"B": "2", "A": "1=x", "EMPTY": ""})), o)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=1=x", "B=2", "EMPTY="}; !slices.Equal(spec.Config.Env, want) {
		t.Errorf("Env = %q, want %q", spec.Config.Env, want)
	}
	want := map[string]string{
		"team": "web", "tier": "front",
		"lormas.managed": "true", "lormas.node": "node-7", "lormas.container": "web-1",
		"lormas.spec": spec.Hash,
	}
	if !maps.Equal(spec.Config.Labels, want) {
		t.Errorf("Labels = %v, want %v", spec.Config.Labels, want)
	}
	if len(spec.Hash) != 64 {
		t.Errorf("Hash = %q, want 64 hex digits", spec.Hash)
	}
}

// TestTranslateReservedLabels shows that even a command that skipped
// validation cannot override the agent's labels.
func TestTranslateReservedLabels(t *testing.T) {
	o, _ := testTranslateOptions(t)
	egg := &protocol.EggConfig{Image: "nginx", Labels: map[string]string{
		"lormas.managed": "false", "lormas.node": "other", "lormas.container": "x", "lormas.spec": "forged",
	}}
	cmd := createCmd(egg, nil, nil)
	if err := cmd.Validate(); protocol.CodeOf(err) != protocol.CodeInvalid {
		t.Errorf("Validate = %v, want invalid for reserved labels", err)
	}
	spec, err := translate(paramsOf(t, cmd), o)
	if err != nil {
		t.Fatal(err)
	}
	l := spec.Config.Labels
	if l["lormas.managed"] != "true" || l["lormas.node"] != "node-7" || l["lormas.container"] != "web-1" || l["lormas.spec"] != spec.Hash {
		t.Errorf("agent labels overridden: %v", l)
	}
}

func TestTranslateVolumes(t *testing.T) {
	o, root := testTranslateOptions(t)
	egg := &protocol.EggConfig{Image: "nginx", Volumes: []protocol.Volume{
		{Host: root + "/data", Container: "/data"},
		{Host: root + "/conf/", Container: "/etc/app", ReadOnly: true},
		{Host: "pgdata", Container: "/var/lib/postgresql"},
		{Host: "pgdata", Container: "/backup", ReadOnly: true},
	}}
	spec, err := translate(paramsOf(t, createCmd(egg, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	want := []mount.Mount{
		{Type: mount.TypeBind, Source: root + "/data", Target: "/data"},
		{Type: mount.TypeBind, Source: root + "/conf", Target: "/etc/app", ReadOnly: true},
		{Type: mount.TypeVolume, Source: "pgdata", Target: "/var/lib/postgresql"},
		{Type: mount.TypeVolume, Source: "pgdata", Target: "/backup", ReadOnly: true},
	}
	if !slices.EqualFunc(spec.Host.Mounts, want, func(a, b mount.Mount) bool { return reflect.DeepEqual(a, b) }) {
		t.Errorf("Mounts = %+v, want %+v", spec.Host.Mounts, want)
	}
	if !slices.Equal(spec.Volumes, []string{"pgdata"}) {
		t.Errorf("named volumes = %q, want [pgdata]", spec.Volumes)
	}
	wantBinds := []policy.Mount{
		{Kind: policy.BindMount, Source: root + "/data", Root: root, Name: "data"},
		{Kind: policy.BindMount, Source: root + "/conf", Root: root, Name: "conf"},
	}
	if !slices.Equal(spec.Binds, wantBinds) {
		t.Errorf("bind sources to make = %+v, want %+v", spec.Binds, wantBinds)
	}
	// Binds would let Docker create a missing source itself, following symlinks.
	if len(spec.Host.Binds) != 0 {
		t.Errorf("Binds = %q, want none", spec.Host.Binds)
	}
}

func TestTranslateVolumeRefused(t *testing.T) {
	o, root := testTranslateOptions(t)
	for _, tt := range []struct {
		host string
		code protocol.Code
	}{
		{"/var/run/docker.sock", protocol.CodeForbidden},
		{"/", protocol.CodeForbidden},
		{"/proc", protocol.CodeForbidden},
		{root + "/../etc", protocol.CodeForbidden},
		{"/etc", protocol.CodeForbidden},
		{root, protocol.CodeForbidden},
		{root + "/a/b", protocol.CodeForbidden},
		{"relative/dir", protocol.CodeInvalid},
	} {
		egg := &protocol.EggConfig{Image: "nginx", Volumes: []protocol.Volume{{Host: root + "/ok", Container: "/ok"}, {Host: tt.host, Container: "/x"}}}
		_, err := translate(paramsOf(t, createCmd(egg, nil, nil)), o)
		if got := protocol.CodeOf(err); got != tt.code {
			t.Errorf("volume %q: code %s (%v), want %s", tt.host, got, err, tt.code)
			continue
		}
		if !strings.Contains(err.Error(), "eggConfig.volumes[1]") {
			t.Errorf("volume %q: error %q does not name the volume", tt.host, err)
		}
	}
}

func TestTranslateHardening(t *testing.T) {
	o, _ := testTranslateOptions(t)
	spec, err := translate(paramsOf(t, createCmd(&protocol.EggConfig{Image: "nginx"}, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	h := spec.Host
	if !slices.Equal(h.SecurityOpt, []string{"no-new-privileges:true"}) {
		t.Errorf("SecurityOpt = %q, want no-new-privileges:true", h.SecurityOpt)
	}
	if h.Privileged || len(h.CapAdd) > 0 || len(h.CapDrop) > 0 || len(h.Devices) > 0 || len(h.DeviceRequests) > 0 {
		t.Errorf("privileged %t, CapAdd %v, CapDrop %v, Devices %v: want none", h.Privileged, h.CapAdd, h.CapDrop, h.Devices)
	}
	if h.NetworkMode != "" || h.PidMode != "" || h.IpcMode != "" || h.UTSMode != "" || h.UsernsMode != "" {
		t.Errorf("namespace modes %q/%q/%q/%q/%q, want defaults", h.NetworkMode, h.PidMode, h.IpcMode, h.UTSMode, h.UsernsMode)
	}
	wantLog := container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}}
	if h.LogConfig.Type != wantLog.Type || !maps.Equal(h.LogConfig.Config, wantLog.Config) {
		t.Errorf("LogConfig = %+v, want %+v", h.LogConfig, wantLog)
	}
	if h.StorageOpt != nil {
		t.Errorf("StorageOpt = %v without a disk request", h.StorageOpt)
	}
	if h.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("RestartPolicy = %q, want no", h.RestartPolicy.Name)
	}
}

func TestTranslateContainerOptions(t *testing.T) {
	o, _ := testTranslateOptions(t)
	spec, err := translate(paramsOf(t, createCmd(&protocol.EggConfig{Image: "nginx"}, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	if !spec.Config.Tty {
		t.Error("Tty = false, want the seed's default true")
	}
	if spec.Name != "web-1" || spec.Config.Image != "nginx" {
		t.Errorf("name %q image %q", spec.Name, spec.Config.Image)
	}

	egg := &protocol.EggConfig{
		Image: "app:1", TTY: boolp(false),
		Command: []string{"serve", "--port", "80"}, Entrypoint: []string{"/bin/app"},
		WorkingDir: "/srv", User: "1000:1000", StopSignal: "SIGINT", RestartPolicy: "unless-stopped",
	}
	spec, err = translate(paramsOf(t, createCmd(egg, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	c := spec.Config
	if c.Tty || !slices.Equal(c.Cmd, []string{"serve", "--port", "80"}) || !slices.Equal(c.Entrypoint, []string{"/bin/app"}) ||
		c.WorkingDir != "/srv" || c.User != "1000:1000" || c.StopSignal != "SIGINT" {
		t.Errorf("Config = %+v", c)
	}
	if spec.Host.RestartPolicy.Name != container.RestartPolicyUnlessStopped {
		t.Errorf("RestartPolicy = %q, want unless-stopped", spec.Host.RestartPolicy.Name)
	}
}

func TestLimitDisk(t *testing.T) {
	o, _ := testTranslateOptions(t)
	newSpec := func() *createSpec {
		spec, err := translate(paramsOf(t, createCmd(&protocol.EggConfig{Image: "nginx"}, &protocol.Resources{Disk: "10g"}, nil)), o)
		if err != nil {
			t.Fatal(err)
		}
		return spec
	}
	spec := newSpec()
	if w, err := spec.limitDisk(storageSupport{Supported: true}, DiskLimitStrict); err != nil || w != nil {
		t.Fatalf("supported: warnings %v err %v", w, err)
	}
	if got := spec.Host.StorageOpt["size"]; got != "10737418240" {
		t.Errorf("StorageOpt size = %q, want 10737418240", got)
	}

	unsupported := storageSupport{Reason: "the storage driver fuse-overlayfs cannot enforce per-container disk limits"}
	spec = newSpec()
	w, err := spec.limitDisk(unsupported, DiskLimitWarn)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "fuse-overlayfs") {
		t.Errorf("warn mode: warnings %q err %v, want one warning naming the driver", w, err)
	}
	if spec.Host.StorageOpt != nil {
		t.Errorf("warn mode set StorageOpt %v", spec.Host.StorageOpt)
	}
	spec = newSpec()
	_, err = spec.limitDisk(unsupported, DiskLimitStrict)
	if protocol.CodeOf(err) != protocol.CodeInvalid || !strings.Contains(err.Error(), "DISK_LIMIT_MODE=strict") {
		t.Errorf("strict mode: %v, want invalid naming DISK_LIMIT_MODE", err)
	}

	spec, err = translate(paramsOf(t, createCmd(&protocol.EggConfig{Image: "nginx"}, nil, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := spec.limitDisk(unsupported, DiskLimitStrict); err != nil || w != nil {
		t.Errorf("no disk request in strict mode: warnings %v err %v", w, err)
	}
}

func TestRequestHash(t *testing.T) {
	base := func() *protocol.Command {
		return createCmd(&protocol.EggConfig{
			Image: "nginx", Ports: []protocol.Port{{Host: 8080, Container: 80}},
			Labels: map[string]string{"a": "1", "b": "2"},
		}, &protocol.Resources{CPU: 1, Memory: "512m"}, map[string]string{"K": "v", "L": "w"})
	}
	h := requestHash(paramsOf(t, base()))
	same := []func(*protocol.Command){
		func(c *protocol.Command) { c.Resources.Memory = "512MB" },
		func(c *protocol.Command) { c.Resources.Memory = "536870912" },
		func(c *protocol.Command) { c.EggConfig.Ports[0].Protocol = "tcp" },
		func(c *protocol.Command) { c.EggConfig.TTY = boolp(true) },
		func(c *protocol.Command) { c.EggConfig.RestartPolicy = "no" },
		func(c *protocol.Command) { c.EggConfig.PullPolicy = "never" },
		func(c *protocol.Command) { c.EggConfig.Command = []string{} },
		func(c *protocol.Command) { c.ID = "another-command-id" },
		func(c *protocol.Command) { c.Environment = map[string]string{"L": "w", "K": "v"} },
	}
	for i, f := range same {
		c := base()
		f(c)
		if got := requestHash(paramsOf(t, c)); got != h {
			t.Errorf("equivalent request %d hashes differently", i)
		}
	}
	different := []func(*protocol.Command){
		func(c *protocol.Command) { c.EggConfig.Image = "nginx:1.27" },
		func(c *protocol.Command) { c.Resources.Memory = "1g" },
		func(c *protocol.Command) { c.Resources.CPU = 2 },
		func(c *protocol.Command) { c.Environment["K"] = "changed" },
		func(c *protocol.Command) { c.EggConfig.TTY = boolp(false) },
		func(c *protocol.Command) { c.EggConfig.Ports[0].Protocol = "udp" },
		func(c *protocol.Command) { c.EggConfig.Labels["a"] = "x" },
		func(c *protocol.Command) { c.EggConfig.Volumes = []protocol.Volume{{Host: "v1", Container: "/v"}} },
	}
	for i, f := range different {
		c := base()
		f(c)
		if got := requestHash(paramsOf(t, c)); got == h {
			t.Errorf("different request %d hashes the same", i)
		}
	}
}

// TestRequestHashStable pins the hash of two requests: the hash is in the
// LabelSpec label of every container created, so a change would turn an
// identical create of an existing container into a conflict.
func TestRequestHashStable(t *testing.T) {
	tty := false
	for _, tt := range []struct {
		cmd  *protocol.Command
		want string
	}{
		{createCmd(&protocol.EggConfig{Image: "nginx"}, nil, nil), "c605a577d11ebddb0994fb859dbe02ba8dc6d1f5d1ece177fe40bd1ca540585f"},
		{createCmd(&protocol.EggConfig{
			Image: "nginx:1.27", Ports: []protocol.Port{{Host: 8080, Container: 80}, {Container: 53, Protocol: "udp"}},
			Volumes: []protocol.Volume{{Host: "data", Container: "/data"}}, Command: []string{"a", "b"}, Entrypoint: []string{"sh"},
			WorkingDir: "/w", User: "1000", TTY: &tty, StopSignal: "SIGINT", RestartPolicy: "always",
			Labels: map[string]string{"a": "1"}, PullPolicy: "never", OpenStdin: true,
		}, &protocol.Resources{CPU: 1.5, Memory: "512m", Disk: "1g", Pids: 64}, map[string]string{"K": "v"}),
			"dae92346168e3c8f2c2052e4ab5b76bc629d71f99d2d1d1f436dc07522cf1222"},
	} {
		if got := requestHash(paramsOf(t, tt.cmd)); got != tt.want {
			t.Errorf("requestHash(%+v) = %s, want %s", tt.cmd.EggConfig, got, tt.want)
		}
	}
}
