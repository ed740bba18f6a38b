package packaging

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"sigs.k8s.io/yaml"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// composeCommand returns the Compose tool as an argv prefix: $COMPOSE (e.g.
// "docker compose"), else docker-compose (v1, as on this machine), else the
// docker CLI's compose plugin (v2).
func composeCommand(t testing.TB) []string {
	t.Helper()
	if c := strings.Fields(os.Getenv("COMPOSE")); len(c) > 0 {
		if _, err := exec.LookPath(c[0]); err != nil {
			unavailable(t, "COMPOSE=%s: %v", os.Getenv("COMPOSE"), err)
		}
		return c
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("docker"); err == nil {
		if exec.Command(p, "compose", "version").Run() == nil {
			return []string{p, "compose"}
		}
	}
	unavailable(t, "no Compose tool: neither docker-compose nor the docker compose plugin")
	return nil
}

// composeProject runs Compose on the repository's compose.yaml as project
// name, with only the settings in envFile (never a developer's .env).
type composeProject struct {
	cmd     []string
	repo    string
	name    string
	envFile string
}

func newComposeProject(t testing.TB, name string, settings map[string]string) *composeProject {
	t.Helper()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		b.WriteString(k + "=" + settings[k] + "\n")
	}
	envFile := filepath.Join(t.TempDir(), "compose.env")
	if err := os.WriteFile(envFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return &composeProject{cmd: composeCommand(t), repo: repoRoot(t), name: name, envFile: envFile}
}

// run runs a Compose subcommand. Variables in the settings file are also
// exported, since Compose v1 gives the process environment precedence.
func (p *composeProject) run(ctx context.Context, args ...string) result {
	full := append(slices.Clone(p.cmd[1:]), "--project-name", p.name, "--env-file", p.envFile,
		"--file", filepath.Join(p.repo, "compose.yaml"))
	full = append(full, args...)
	env, _ := os.ReadFile(p.envFile)
	vars := []string{"COMPOSE_DOCKER_CLI_BUILD=0", "DOCKER_BUILDKIT=0"}
	for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		if line != "" {
			vars = append(vars, line)
		}
	}
	return run(ctx, p.repo, vars, p.cmd[0], full...)
}

// composeConfig is the part of `compose config` the tests read.
type composeConfig struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Build struct {
		Context string `json:"context"`
		Target  string `json:"target"`
	} `json:"build"`
	Image       string             `json:"image"`
	User        string             `json:"user"`
	ReadOnly    bool               `json:"read_only"`
	CapDrop     []string           `json:"cap_drop"`
	CapAdd      []string           `json:"cap_add"`
	Privileged  bool               `json:"privileged"`
	SecurityOpt []string           `json:"security_opt"`
	GroupAdd    []any              `json:"group_add"`
	Restart     string             `json:"restart"`
	Environment map[string]*string `json:"environment"`
	Volumes     []any              `json:"volumes"`
	Ports       []any              `json:"ports"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	DependsOn any `json:"depends_on"`
}

// mounts normalises the short and long volume syntaxes into source ->
// (target, read-only).
func (s composeService) mounts(t *testing.T) map[string]struct {
	target   string
	readOnly bool
} {
	t.Helper()
	m := map[string]struct {
		target   string
		readOnly bool
	}{}
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			ro := len(parts) > 2 && strings.Contains(parts[2], "ro")
			m[parts[0]] = struct {
				target   string
				readOnly bool
			}{parts[1], ro}
		case map[string]any:
			src, _ := v["source"].(string)
			dst, _ := v["target"].(string)
			ro, _ := v["read_only"].(bool)
			m[src] = struct {
				target   string
				readOnly bool
			}{dst, ro}
		default:
			t.Fatalf("volume entry %#v", v)
		}
	}
	return m
}

// configSettings are the .env settings the config tests resolve compose.yaml with.
var configSettings = map[string]string{"DOCKER_GID": "4242", "NODE_NAME": "edge-7", "VOLUME_ROOT": "/srv/lormas-volumes"}

// TestComposeConfig: the machine's Compose tool (v1 here) accepts
// compose.yaml, and what it resolves is the hardened, self-enrolling,
// secret-free system docs/deploy.md asks for.
func TestComposeConfig(t *testing.T) {
	p := newComposeProject(t, "lormasconfigtest", configSettings)
	ctx, cancel := contextWithTimeout()
	defer cancel()
	r := p.run(ctx, "config")
	if r.err != nil {
		t.Fatalf("compose config: %s", r)
	}
	checkComposeConfig(t, r.stdout)
}

// TestComposeSpecV2 loads compose.yaml with compose-go, the loader and
// Compose Specification schema of Compose v2 (`docker compose`), so the file
// is known to work with v2 as well as with the machine's v1.
func TestComposeSpecV2(t *testing.T) {
	repo := repoRoot(t)
	var env []string
	for k, v := range configSettings {
		env = append(env, k+"="+v)
	}
	// Only these settings: no .env and no process environment.
	opts, err := composecli.NewProjectOptions([]string{filepath.Join(repo, "compose.yaml")},
		composecli.WithName("lormasconfigtest"), composecli.WithWorkingDirectory(repo),
		composecli.WithEnv(env), composecli.WithInterpolation(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithTimeout()
	defer cancel()
	project, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("compose v2 loader rejects compose.yaml: %v", err)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		t.Fatal(err)
	}
	checkComposeConfig(t, string(out))
}

// checkComposeConfig decodes a resolved compose configuration and checks it.
func checkComposeConfig(t *testing.T, resolved string) {
	t.Helper()
	var cfg composeConfig
	if err := yaml.Unmarshal([]byte(resolved), &cfg); err != nil {
		t.Fatalf("decode compose config: %v\n%s", err, resolved)
	}
	server, agent := cfg.Services["lormas-server"], cfg.Services["lormas-agent"]
	if len(cfg.Services) != 2 || server.Image == "" || agent.Image == "" {
		t.Fatalf("services %v: want lormas-server and lormas-agent", slices.Sorted(maps.Keys(cfg.Services)))
	}
	if server.Build.Target != "server" || agent.Build.Target != "agent" {
		t.Errorf("build targets %q/%q, want server/agent", server.Build.Target, agent.Build.Target)
	}

	for name, s := range map[string]composeService{"lormas-server": server, "lormas-agent": agent} {
		if s.User != "65532:65532" || !s.ReadOnly || s.Privileged || len(s.CapAdd) != 0 ||
			!slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: user %q read_only %v privileged %v cap_drop %v cap_add %v security_opt %v: want 65532, read-only, drop ALL, no-new-privileges",
				name, s.User, s.ReadOnly, s.Privileged, s.CapDrop, s.CapAdd, s.SecurityOpt)
		}
		if s.Restart != "unless-stopped" {
			t.Errorf("%s restart %q, want unless-stopped", name, s.Restart)
		}
		for k, v := range s.Environment {
			if strings.Contains(k, "TOKEN") && !strings.HasSuffix(k, "_FILE") && v != nil {
				t.Errorf("%s: %s has a value in compose.yaml; secrets are generated or passed through", name, k)
			}
		}
	}
	if got := agent.GroupAdd; len(got) != 1 || fmt.Sprint(got[0]) != "4242" {
		t.Errorf("agent group_add %v, want [4242] from DOCKER_GID", got)
	}
	for name, s := range map[string]composeService{"lormas-server": server, "lormas-agent": agent} {
		if hc := s.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/usr/local/bin/" + name, "healthcheck"}) {
			t.Errorf("%s healthcheck %+v, want its healthcheck subcommand", name, hc)
		}
	}
	if dep, _ := agent.DependsOn.(map[string]any)["lormas-server"].(map[string]any); dep["condition"] != "service_healthy" {
		t.Errorf("agent depends_on %v: want lormas-server with condition service_healthy", agent.DependsOn)
	}
	mounts := agent.mounts(t)
	if m, ok := mounts["/var/run/docker.sock"]; !ok || m.target != "/var/run/docker.sock" {
		t.Errorf("agent does not mount the Docker socket: %v", mounts)
	}
	if m, ok := mounts["/proc"]; !ok || m.target != "/host/proc" || !m.readOnly {
		t.Errorf("agent /proc mount %+v: want /proc at /host/proc read-only", m)
	}
	env := func(k string) string { return deref(agent.Environment[k]) }
	if env("HOST_PROC") != "/host/proc" || env("NODE_NAME") != "edge-7" || env("SERVER_URL") != "ws://lormas-server:3000" {
		t.Errorf("agent HOST_PROC=%q NODE_NAME=%q SERVER_URL=%q", env("HOST_PROC"), env("NODE_NAME"), env("SERVER_URL"))
	}
	// The volume root is mounted at the identical path, or the agent cannot
	// see bind sources where Docker does (and refuses bind mounts).
	if root := env("VOLUME_ROOTS"); root != "/srv/lormas-volumes" {
		t.Errorf("agent VOLUME_ROOTS=%q, want VOLUME_ROOT's /srv/lormas-volumes", root)
	} else if m, ok := mounts[root]; !ok || m.target != root || m.readOnly {
		t.Errorf("agent mounts of the volume root %s: %+v (all: %v); want it read-write at the identical path", root, m, mounts)
	}

	// Enrollment: the server exports its generated token into a volume the
	// agent mounts read-only, at the path the agent reads.
	export := deref(server.Environment["ENROLLMENT_TOKEN_EXPORT_FILE"])
	tokenFile := env("ENROLLMENT_TOKEN_FILE")
	if export == "" || tokenFile == "" {
		t.Fatalf("ENROLLMENT_TOKEN_EXPORT_FILE=%q (server), ENROLLMENT_TOKEN_FILE=%q (agent): want both", export, tokenFile)
	}
	volumeOf := func(s composeService, file string) (string, bool) {
		for src, m := range s.mounts(t) {
			if strings.HasPrefix(file, m.target+"/") {
				return src, m.readOnly
			}
		}
		return "", false
	}
	sv, _ := volumeOf(server, export)
	av, ro := volumeOf(agent, tokenFile)
	if sv == "" || sv != av || !ro || filepath.Base(export) != filepath.Base(tokenFile) {
		t.Errorf("server exports to %s (volume %q), agent reads %s (volume %q, read-only %v): want the same file through one volume, read-only for the agent",
			export, sv, tokenFile, av, ro)
	}
	if _, named := cfg.Volumes[sv]; !named {
		t.Errorf("enrollment volume %q is not a named volume", sv)
	}
	if sd, _ := volumeOf(agent, env("STATE_DIR")+"/node-token"); sd == "" {
		t.Errorf("agent STATE_DIR %q is not on a volume: the enrolled token would be lost", env("STATE_DIR"))
	}
	data, _ := volumeOf(server, deref(server.Environment["DATA_DIR"])+"/lormas.db")
	if data == "" {
		t.Errorf("server DATA_DIR %q is not on a volume", deref(server.Environment["DATA_DIR"]))
	} else if _, mounted := agent.mounts(t)[data]; mounted {
		t.Errorf("agent mounts the server's data volume %q (its database and secrets)", data)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestComposeStack brings the whole compose.yaml system up as an operator
// would (`up -d`), with the images built from the Dockerfile: the agent must
// enroll itself with the server's generated token, turn healthy, keep its
// node identity across a re-created container (state volume), and run a
// create/start/logs/delete cycle sent through the server's API, with the
// admin token the server generated, read as the README says. `down -v`
// must leave nothing behind.
func TestComposeStack(t *testing.T) {
	buildImages(t)
	cli := dockertest.Require(t)
	workload := dockertest.WorkloadImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	nodeName := uniqueName("compose-node-")
	port := testsupport.FreePort(t)
	// The volume root: a fresh host directory (t.TempDir's parent is private
	// to root, and the agent runs as 65532); compose mounts it into the agent.
	base, err := os.MkdirTemp("", "lormas-compose-volumes-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	volumeRoot := filepath.Join(base, "volumes")
	p := newComposeProject(t, uniqueName("lormaspkgtest"), map[string]string{
		"DOCKER_GID":          strconv.Itoa(socketGroup(t)),
		"LORMAS_BIND":         "127.0.0.1",
		"LORMAS_PORT":         port,
		"NODE_NAME":           nodeName,
		"LOG_LEVEL":           "debug",
		"LORMAS_SERVER_IMAGE": serverTag,
		"LORMAS_AGENT_IMAGE":  agentTag,
		"LORMAS_VERSION":      buildVersion,
		"LORMAS_COMMIT":       buildCommit,
		"VOLUME_ROOT":         volumeRoot,
	})
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout()
		defer cancel()
		if t.Failed() {
			t.Logf("compose logs:\n%s", p.run(ctx, "logs", "--no-color", "--tail", "100").stdout)
		}
		if r := p.run(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "15"); r.err != nil {
			t.Errorf("compose down: %s", r)
		}
		vols, err := cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+p.name))})
		if err == nil && len(vols.Volumes) != 0 {
			t.Errorf("compose down -v left volumes %v", vols.Volumes)
		}
	})

	start := time.Now()
	if r := p.run(ctx, "up", "--detach", "--no-build"); r.err != nil {
		t.Fatalf("compose up: %s", r)
	}
	agentID := composeContainer(ctx, t, p, "lormas-agent")
	waitHealthy(ctx, t, cli, agentID)
	t.Logf("stack up and agent healthy in %s", time.Since(start).Round(time.Second))

	// The admin token the server generated, found as the README says
	// (issue 11: the log carried the sentence, not the token).
	r := p.run(ctx, "exec", "-T", "lormas-server", "lormas-server", "admin-token")
	adminToken := strings.TrimSpace(r.stdout)
	if r.err != nil || !strings.HasPrefix(adminToken, "lormas_admin_") || strings.Contains(adminToken, "\n") {
		t.Fatalf("exec -T lormas-server lormas-server admin-token: %s", r)
	}
	if logs := p.run(ctx, "logs", "--no-color", "lormas-server").stdout; strings.Contains(logs, adminToken) {
		t.Error("the admin token is in the server's log")
	}
	api := newAdminAPI("http://127.0.0.1:"+port, adminToken)
	first := api.waitNode(ctx, t, nodeName)
	t.Logf("agent enrolled as node %s (%s)", first.ID, first.Name)

	// A new agent container enrolls no second time: its token is in the state volume.
	if r := p.run(ctx, "up", "--detach", "--no-build", "--no-deps", "--force-recreate", "lormas-agent"); r.err != nil {
		t.Fatalf("compose up --force-recreate lormas-agent: %s", r)
	}
	if again := composeContainer(ctx, t, p, "lormas-agent"); again == agentID {
		t.Fatal("the agent container was not re-created")
	} else {
		agentID = again
	}
	waitHealthy(ctx, t, cli, agentID)
	var nodes []node
	if _, err := api.do(ctx, "GET", "/api/nodes", nil, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].ID != first.ID {
		t.Fatalf("nodes after re-creating the agent: %+v; want only %s: the agent must reuse its enrolled token", nodes, first.ID)
	}
	second := api.waitNode(ctx, t, nodeName)
	driveWorkload(ctx, t, api, cli, second.ID, workload)
	driveBind(ctx, t, api, cli, second.ID, workload, volumeRoot)
}

// driveBind creates a container with a bind mount under the volume root
// through the server and the compose agent: the agent sees the root (compose
// mounts it at the identical path) and makes the directory, a real one of
// the agent's user, given to Docker as a bind mount; a nested path is
// refused.
func driveBind(ctx context.Context, t *testing.T, api *adminAPI, cli *client.Client, nodeID, workloadImage, root string) {
	t.Helper()
	name := uniqueName("lormas-pkgtest-bind-")
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), name, container.RemoveOptions{Force: true})
	})
	noTTY := false
	egg := func(host string) *protocol.EggConfig {
		return &protocol.EggConfig{
			Image: workloadImage, PullPolicy: protocol.PullNever, Command: []string{"-lines", "1"}, TTY: &noTTY,
			Volumes: []protocol.Volume{{Host: host, Container: "/data"}},
		}
	}
	api.command(ctx, t, nodeID, protocol.Command{Action: protocol.ActionCreate, ContainerID: name, EggConfig: egg(root + "/" + name)})
	inspect, err := cli.ContainerInspect(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if m := inspect.Mounts; len(m) != 1 || m[0].Type != "bind" || m[0].Source != root+"/"+name || m[0].Destination != "/data" {
		t.Errorf("mounts %+v, want %s/%s bound at /data", m, root, name)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(root+"/"+name, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Uid != 65532 {
		t.Errorf("bind source %s/%s: %v, mode %o, uid %d; want a directory of the agent's uid 65532", root, name, err, st.Mode, st.Uid)
	}
	var res protocol.CommandResult
	nested := protocol.Command{Action: protocol.ActionCreate, ContainerID: name + "-2", EggConfig: egg(root + "/" + name + "/x")}
	if _, err := api.do(ctx, http.MethodPost, "/api/nodes/"+nodeID+"/commands", nested, &res); err != nil {
		t.Fatal(err)
	}
	if res.Code != protocol.CodeForbidden || !strings.Contains(res.Error, "nested deeper than one directory") {
		t.Errorf("create binding a nested path: %s %s %q, want forbidden", res.Status, res.Code, res.Error)
	}
}

// composeContainer is the id of the project's container for service.
func composeContainer(ctx context.Context, t *testing.T, p *composeProject, service string) string {
	t.Helper()
	r := p.run(ctx, "ps", "-q", service)
	id := strings.TrimSpace(r.stdout)
	if r.err != nil || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("compose ps %s: %s", service, r)
	}
	return id
}

// The README's compose commands are the ones TestComposeStack runs.
func TestReadmeComposeAdminToken(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "\ndocker compose exec -T lormas-server lormas-server admin-token") {
		t.Error("README does not show how to print the compose admin token (docker compose exec -T lormas-server lormas-server admin-token)")
	}
	compose, err := os.ReadFile(filepath.Join(repoRoot(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(compose), "docker compose exec -T lormas-server lormas-server admin-token") {
		t.Error("compose.yaml's header does not say how to print the admin token")
	}
}
