package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

func (c *cli) versionCmd(args []string) error {
	if _, err := c.newFlags("version").Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "lormasctl %s\n", version)
	return nil
}

func printJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "    "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// createOptions are the flags of create and run.
type createOptions struct {
	publish, volumes, env, labels []string
	cpus                          float64
	memory, restart, entrypoint   string
	workdir, user, pull, stopSig  string
	pids                          int
	tty, interactive, detach      bool
}

func (o *createOptions) register(f *flags, run bool) {
	f.List(&o.publish, "p", "publish", "Publish a container's port to the host: [hostIp:]hostPort:containerPort[/udp]")
	f.List(&o.volumes, "v", "volume", "Bind mount or named volume: source:/container/path[:ro]")
	f.List(&o.env, "e", "env", "Set environment variables: KEY=VALUE")
	f.List(&o.labels, "l", "label", "Set metadata on the container: KEY=VALUE")
	f.Float(&o.cpus, "", "cpus", 0, "Number of CPUs (fractional: 0.5)")
	f.String(&o.memory, "m", "memory", "", "Memory limit (512m, 1g)")
	f.Int(&o.pids, "", "pids-limit", 0, "Maximum number of processes")
	f.String(&o.restart, "", "restart", "", "Restart policy: no, on-failure, unless-stopped, always")
	f.String(&o.entrypoint, "", "entrypoint", "", "Overwrite the default ENTRYPOINT of the image")
	f.String(&o.workdir, "w", "workdir", "", "Working directory inside the container")
	f.String(&o.user, "u", "user", "", "Username or UID")
	f.String(&o.pull, "", "pull", "", "Pull image before running: always, missing, never")
	f.String(&o.stopSig, "", "stop-signal", "", "Signal to stop the container")
	f.Bool(&o.tty, "t", "tty", "Allocate a pseudo-TTY")
	f.Bool(&o.interactive, "i", "interactive", "Keep STDIN open for console input (eggConfig.openStdin)")
	if run {
		f.Bool(&o.detach, "d", "detach", "Run container in background (default unless -i or -t)")
	}
}

// command builds the create command.
func (o *createOptions) command(name, image string, cmdArgs []string) (protocol.Command, error) {
	tty := o.tty
	egg := &protocol.EggConfig{Image: image, Command: cmdArgs, WorkingDir: o.workdir, User: o.user, TTY: &tty,
		RestartPolicy: o.restart, PullPolicy: o.pull, StopSignal: o.stopSig, OpenStdin: o.interactive}
	if o.entrypoint != "" {
		egg.Entrypoint = []string{o.entrypoint}
	}
	for _, p := range o.publish {
		port, err := parsePort(p)
		if err != nil {
			return protocol.Command{}, err
		}
		egg.Ports = append(egg.Ports, port)
	}
	for _, v := range o.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			return protocol.Command{}, usagef("invalid volume %q: want source:/container/path[:ro]", v)
		}
		egg.Volumes = append(egg.Volumes, protocol.Volume{Host: parts[0], Container: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"})
	}
	env, err := keyValues(o.env, "env")
	if err != nil {
		return protocol.Command{}, err
	}
	if egg.Labels, err = keyValues(o.labels, "label"); err != nil {
		return protocol.Command{}, err
	}
	cmd := protocol.Command{Action: protocol.ActionCreate, ContainerID: name, EggConfig: egg, Environment: env}
	if o.cpus != 0 || o.memory != "" || o.pids != 0 {
		cmd.Resources = &protocol.Resources{CPU: o.cpus, Memory: protocol.Size(o.memory), Pids: int64(o.pids)}
	}
	return cmd, nil
}

func parsePort(s string) (protocol.Port, error) {
	spec, proto, _ := strings.Cut(s, "/")
	parts := strings.Split(spec, ":")
	var p protocol.Port
	p.Protocol = proto
	var host, ctr string
	switch len(parts) {
	case 1:
		ctr = parts[0]
	case 2:
		host, ctr = parts[0], parts[1]
	case 3:
		p.HostIP, host, ctr = parts[0], parts[1], parts[2]
	default:
		return p, usagef("invalid port %q: want [hostIp:]hostPort:containerPort[/udp]", s)
	}
	var err error
	if p.Container, err = strconv.Atoi(ctr); err != nil {
		return p, usagef("invalid container port in %q", s)
	}
	if host != "" {
		if p.Host, err = strconv.Atoi(host); err != nil {
			return p, usagef("invalid host port in %q", s)
		}
	}
	return p, nil
}

func keyValues(list []string, what string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("invalid %s %q: want KEY=VALUE", what, kv)
		}
		m[k] = v
	}
	return m, nil
}

func (c *cli) createCmd(args []string) error {
	_, _, err := c.create("create", args)
	return err
}

// create runs create (or run's create) and prints the container's id.
func (c *cli) create(name string, args []string) (createOptions, string, error) {
	var o createOptions
	f := c.newFlags(name)
	o.register(f, name == "run")
	rest, err := f.Parse(args)
	if err != nil {
		return o, "", err
	}
	if len(rest) < 2 {
		return o, "", usagef("%q requires at least 2 arguments: CONTAINER IMAGE [COMMAND] [ARG...]", name)
	}
	cmd, err := o.command(rest[0], rest[1], rest[2:])
	if err != nil {
		return o, "", err
	}
	var res protocol.CreateResult
	if err := c.command(cmd, &res); err != nil {
		return o, "", err
	}
	if name == "create" || o.detach || !(o.tty || o.interactive) {
		fmt.Fprintln(c.stdout, res.ContainerID)
	}
	return o, rest[0], nil
}

func (c *cli) runCmd(args []string) error {
	o, name, err := c.create("run", args)
	if err != nil {
		return err
	}
	if err := c.command(protocol.Command{Action: protocol.ActionStart, ContainerID: name}, nil); err != nil {
		return err
	}
	if o.detach || !(o.tty || o.interactive) {
		return nil
	}
	return c.attach(name, 0)
}

// simple runs an action that takes one container and prints its name.
func (c *cli) simple(name string, args []string, action protocol.Action, setup func(*flags, *protocol.Command)) error {
	cmd := protocol.Command{Action: action}
	f := c.newFlags(name)
	if setup != nil {
		setup(f, &cmd)
	}
	rest, err := f.Parse(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("%q requires at least 1 argument: CONTAINER", name)
	}
	for _, id := range rest {
		cmd.ContainerID = id
		if err := c.command(cmd, nil); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, id)
	}
	return nil
}

func (c *cli) startCmd(args []string) error {
	return c.simple("start", args, protocol.ActionStart, nil)
}

func timeoutFlag(f *flags, cmd *protocol.Command) {
	f.fs.Func("time", "Seconds to wait before killing the container", func(s string) error {
		n, err := strconv.Atoi(s)
		cmd.Timeout = &n
		return err
	})
	f.add("t", "time", "int", "", "Seconds to wait before killing the container")
}

func (c *cli) stopCmd(args []string) error {
	return c.simple("stop", args, protocol.ActionStop, timeoutFlag)
}

func (c *cli) restartCmd(args []string) error {
	return c.simple("restart", args, protocol.ActionRestart, timeoutFlag)
}

func (c *cli) rmCmd(args []string) error {
	return c.simple("rm", args, protocol.ActionDelete, nil)
}

func (c *cli) killCmd(args []string) error {
	return c.simple("kill", args, protocol.ActionKill, func(f *flags, cmd *protocol.Command) {
		f.String(&cmd.Signal, "s", "signal", "", "Signal to send to the container (default SIGKILL)")
	})
}

func (c *cli) inspectCmd(args []string) error {
	rest, err := c.newFlags("inspect").Parse(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("\"inspect\" requires at least 1 argument: CONTAINER")
	}
	for _, id := range rest {
		var raw json.RawMessage
		if err := c.command(protocol.Command{Action: protocol.ActionInspect, ContainerID: id}, &raw); err != nil {
			return err
		}
		if err := printJSON(c.stdout, raw); err != nil {
			return err
		}
	}
	return nil
}

func (c *cli) psCmd(args []string) error {
	var quiet bool
	f := c.newFlags("ps")
	f.Bool(&quiet, "q", "quiet", "Only display container names")
	if _, err := f.Parse(args); err != nil {
		return err
	}
	var res protocol.ListResult
	if err := c.command(protocol.Command{Action: protocol.ActionList}, &res); err != nil {
		return err
	}
	if quiet {
		for _, it := range res.Containers {
			fmt.Fprintln(c.stdout, it.ContainerID)
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tIMAGE\tSTATE\tCREATED\tDOCKER ID")
	for _, it := range res.Containers {
		id := it.DockerID
		if len(id) > 12 {
			id = id[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.ContainerID, it.Image, it.State, ago(it.CreatedAt), id)
	}
	return tw.Flush()
}
