package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"
)

// nodeCmd is "lormasctl node COMMAND".
func (c *cli) nodeCmd(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(c.stdout, `
Usage:  lormasctl node COMMAND

Manage nodes

Commands:
  create       Register a node and print its token (--description TEXT)
  inspect      Display detailed information on a node
  ls           List nodes
  rm           Remove a node (its agent is disconnected)
  rotate-token Issue a new token for a node; the old one stops working

Run 'lormasctl node COMMAND --help' for more information on a command.
`)
		return nil
	}
	sub, args := args[0], args[1:]
	cl, err := c.client()
	if err != nil {
		return err
	}
	switch sub {
	case "ls", "list", "ps":
		if len(args) > 0 {
			return usagef("node ls takes no arguments")
		}
		var nodes []nodeView
		if err := cl.do(c.ctx, "GET", "/api/nodes", nil, &nodes); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "NODE ID\tNAME\tSTATUS\tLAST HEARTBEAT\tAGENT")
		for _, n := range nodes {
			status := "disconnected"
			if n.Connected {
				status = "connected"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.ID, n.Name, status, ago(n.LastHeartbeat), dash(n.AgentVersion))
		}
		return tw.Flush()
	case "create":
		var desc string
		f := c.newFlags("node")
		f.String(&desc, "d", "description", "", "Description of the node")
		rest, err := f.Parse(args)
		if err != nil {
			return err
		}
		if len(rest) != 1 {
			return usagef("node create takes one NAME")
		}
		var n struct {
			ID    string `json:"id"`
			Name  string `json:"name"`
			Token string `json:"token"`
		}
		if err := cl.do(c.ctx, "POST", "/api/nodes", map[string]string{"name": rest[0], "description": desc}, &n); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "ID:    %s\nName:  %s\nToken: %s\n", n.ID, n.Name, n.Token)
		fmt.Fprintln(c.stderr, "Give the token to the node's agent (NODE_TOKEN_FILE); it is not shown again.")
		return nil
	case "rm", "inspect", "rotate-token":
		if len(args) != 1 {
			return usagef("node %s takes one NODE", sub)
		}
		c.node = args[0]
		id, err := c.nodeID()
		if err != nil {
			return err
		}
		path := "/api/nodes/" + url.PathEscape(id)
		switch sub {
		case "rm":
			if err := cl.do(c.ctx, "DELETE", path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, id)
		case "inspect":
			var raw json.RawMessage
			if err := cl.do(c.ctx, "GET", path, nil, &raw); err != nil {
				return err
			}
			return printJSON(c.stdout, raw)
		default:
			var t struct {
				Token string `json:"token"`
			}
			if err := cl.do(c.ctx, "PATCH", path+"/token", nil, &t); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, t.Token)
		}
		return nil
	}
	return usagef("unknown node command %q (ls, create, rm, rotate-token, inspect)", sub)
}

// ago renders an RFC 3339 time as "5 seconds ago".
func ago(ts string) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
