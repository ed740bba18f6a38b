// Command lormasctl is the operator's command-line client of lormas-server:
// nodes, containers, logs, exec, attach and live stats, with the commands
// and flags a docker user would guess. It is configured by environment:
// LORMAS_URL (default http://localhost:3000), LORMAS_TOKEN or
// LORMAS_TOKEN_FILE (the admin token), LORMAS_NODE (the node to act on).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Exit statuses (docker's: 125 for the client's own failures).
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 125
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{os.Getenv}, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env reads the environment (a seam for tests).
type env struct{ get func(string) string }

// cli is one invocation.
type cli struct {
	ctx    context.Context
	env    env
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	node   string // --node / LORMAS_NODE
	api    *client
}

// command is one subcommand.
type command struct {
	name    string
	usage   string // after the command name
	summary string
	run     func(c *cli, args []string) error
	group   string // "" for Commands, else the management group
}

var commands []command

func init() {
	commands = []command{
		{name: "node", usage: "COMMAND", summary: "Manage nodes (ls, create, rm, rotate-token, inspect)", run: (*cli).nodeCmd, group: "management"},
		{name: "attach", usage: "[OPTIONS] CONTAINER", summary: "Attach local standard input, output, and error streams to a running container", run: (*cli).attachCmd},
		{name: "create", usage: "[OPTIONS] CONTAINER IMAGE [COMMAND] [ARG...]", summary: "Create a new container", run: (*cli).createCmd},
		{name: "exec", usage: "[OPTIONS] CONTAINER COMMAND [ARG...]", summary: "Execute a command in a running container", run: (*cli).execCmd},
		{name: "inspect", usage: "CONTAINER", summary: "Display detailed information on a container", run: (*cli).inspectCmd},
		{name: "kill", usage: "[OPTIONS] CONTAINER", summary: "Kill a running container", run: (*cli).killCmd},
		{name: "logs", usage: "[OPTIONS] CONTAINER", summary: "Fetch the logs of a container", run: (*cli).logsCmd},
		{name: "ps", usage: "", summary: "List containers (alias: ls)", run: (*cli).psCmd},
		{name: "restart", usage: "[OPTIONS] CONTAINER", summary: "Restart a container", run: (*cli).restartCmd},
		{name: "rm", usage: "CONTAINER", summary: "Remove a container (stopping it first)", run: (*cli).rmCmd},
		{name: "run", usage: "[OPTIONS] CONTAINER IMAGE [COMMAND] [ARG...]", summary: "Create and start a container (and attach with -i/-t)", run: (*cli).runCmd},
		{name: "start", usage: "CONTAINER", summary: "Start a stopped container", run: (*cli).startCmd},
		{name: "stats", usage: "[OPTIONS] CONTAINER [CONTAINER...]", summary: "Display a live stream of container resource usage statistics", run: (*cli).statsCmd},
		{name: "stop", usage: "[OPTIONS] CONTAINER", summary: "Stop a running container", run: (*cli).stopCmd},
		{name: "version", usage: "", summary: "Show the version", run: (*cli).versionCmd},
	}
}

func lookupCommand(name string) (command, bool) {
	switch name {
	case "ls":
		name = "ps"
	case "nodes":
		name = "node"
	}
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// usageError is a mistake on the command line: it prints with a hint and
// exits with exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitCodeError ends the program with a given status (exec passes on the
// process's exit code).
type exitCodeError struct{ code int }

func (e *exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func run(ctx context.Context, args []string, e env, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, env: e, stdin: stdin, stdout: stdout, stderr: stderr, node: e.get("LORMAS_NODE")}
	// Global options before the command.
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch a := args[0]; {
		case a == "-h" || a == "--help" || a == "-help":
			printHelp(stdout)
			return exitOK
		case a == "-n" || a == "--node":
			if len(args) < 2 {
				fmt.Fprintln(stderr, "lormasctl: flag needs an argument: --node")
				return exitUsage
			}
			c.node, args = args[1], args[2:]
			continue
		case strings.HasPrefix(a, "--node="):
			c.node = strings.TrimPrefix(a, "--node=")
		default:
			fmt.Fprintf(stderr, "lormasctl: unknown flag: %s\nSee 'lormasctl --help'.\n", a)
			return exitUsage
		}
		args = args[1:]
	}
	if len(args) == 0 {
		printHelp(stdout)
		return exitOK
	}
	name, args := args[0], args[1:]
	if name == "help" {
		if len(args) > 0 {
			if cmd, ok := lookupCommand(args[0]); ok {
				printCommandHelp(stdout, cmd, nil)
				return exitOK
			}
		}
		printHelp(stdout)
		return exitOK
	}
	cmd, ok := lookupCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "lormasctl: '%s' is not a lormasctl command.\nSee 'lormasctl --help'\n", name)
		return exitUsage
	}
	err := cmd.run(c, args)
	var (
		ue *usageError
		ee *exitCodeError
		ae *apiError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "lormasctl %s: %s\nSee 'lormasctl %s --help'.\n", cmd.name, ue.msg, cmd.name)
		return exitUsage
	case errors.As(err, &ae):
		fmt.Fprintf(stderr, "Error: %s\n", ae.Error())
		return exitError
	default:
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitError
	}
}

func printHelp(w io.Writer) {
	fmt.Fprint(w, `
Usage:  lormasctl [OPTIONS] COMMAND

A command-line client for the Lormas control server

Options:
  -n, --node string   Node to act on: id or name (default $LORMAS_NODE, or the only node)
  -h, --help          Print usage

Management Commands:
`)
	var mgmt, cmds []command
	for _, c := range commands {
		if c.group == "management" {
			mgmt = append(mgmt, c)
		} else {
			cmds = append(cmds, c)
		}
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range mgmt {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nCommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Environment:
  LORMAS_URL          Server URL (default http://localhost:3000)
  LORMAS_TOKEN        Admin token
  LORMAS_TOKEN_FILE   File holding the admin token (instead of LORMAS_TOKEN)
  LORMAS_NODE         Default node (id or name)

Run 'lormasctl COMMAND --help' for more information on a command.
`)
}
