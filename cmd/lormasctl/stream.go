package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data []byte
}

// events reads an event stream until it ends or on returns false.
func (c *cli) events(path string, on func(sseEvent) (bool, error)) error {
	resp, err := c.api.send(c.ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = []byte(strings.TrimPrefix(line, "data: "))
		case line == "" && ev.name != "":
			more, err := on(ev)
			if err != nil || !more {
				return err
			}
			ev = sseEvent{}
		}
	}
	if c.ctx.Err() != nil {
		return nil // interrupted by the user
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the stream ended without a result")
}

// resultError turns a command_result event into an error, nil on success.
func resultError(data []byte) error {
	var res struct {
		Status protocol.Status `json:"status"`
		Error  string          `json:"error"`
		Code   protocol.Code   `json:"code"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("unreadable result: %v", err)
	}
	if res.Status != protocol.StatusSuccess {
		return &apiError{Msg: res.Error, Code: res.Code}
	}
	return nil
}

func (c *cli) logsCmd(args []string) error {
	var (
		follow, timestamps bool
		tail               int
		since              string
	)
	f := c.newFlags("logs")
	f.dropShort("n")
	f.Bool(&follow, "f", "follow", "Follow log output")
	f.Bool(&timestamps, "t", "timestamps", "Show timestamps")
	f.Int(&tail, "n", "tail", 100, "Number of lines to show from the end of the logs")
	f.String(&since, "", "since", "", "Show logs since a timestamp (RFC 3339 or Unix seconds)")
	rest, err := f.Parse(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("\"logs\" requires exactly 1 argument: CONTAINER")
	}
	path, err := c.containerPath(rest[0], "logs")
	if err != nil {
		return err
	}
	q := url.Values{"lines": {strconv.Itoa(tail)}}
	if follow {
		q.Set("follow", "1")
	}
	if timestamps {
		q.Set("timestamps", "1")
	}
	if since != "" {
		q.Set("since", since)
	}
	return c.events(path+"?"+q.Encode(), func(ev sseEvent) (bool, error) {
		switch ev.name {
		case "log":
			var l struct {
				Line   string `json:"line"`
				Stream string `json:"stream"`
			}
			if json.Unmarshal(ev.data, &l) == nil {
				w := c.stdout
				if l.Stream == "stderr" {
					w = c.stderr
				}
				fmt.Fprintln(w, l.Line)
			}
		case "dropped":
			fmt.Fprintf(c.stderr, "WARNING: log lines dropped: %s\n", ev.data)
		case "result":
			return false, resultError(ev.data)
		case "error":
			return false, errors.New(string(ev.data))
		}
		return true, nil
	})
}

func (c *cli) statsCmd(args []string) error {
	var (
		noStream bool
		interval float64
	)
	f := c.newFlags("stats")
	f.Bool(&noStream, "", "no-stream", "Disable streaming stats and only pull the first result")
	f.Float(&interval, "", "interval", 1, "Seconds between samples")
	rest, err := f.Parse(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("\"stats\" requires at least 1 argument: CONTAINER [CONTAINER...]")
	}
	if _, err := c.client(); err != nil {
		return err
	}
	tbl := &statsTable{w: c.stdout, names: rest, rows: map[string]protocol.StatsSample{}}
	if file, ok := c.stdout.(*os.File); ok && term.IsTerminal(int(file.Fd())) {
		tbl.live = true
	}
	if noStream {
		for _, name := range rest {
			var s protocol.StatsResult
			if err := c.command(protocol.Command{Action: protocol.ActionStats, ContainerID: name}, &s); err != nil {
				return err
			}
			tbl.rows[name] = protocol.StatsSample{ContainerID: name, CPU: s.CPUPercent / 100, MemoryBytes: s.MemoryUsageBytes,
				MemoryLimitBytes: s.MemoryLimitBytes, NetRxBytes: s.NetworkRxBytes, NetTxBytes: s.NetworkTxBytes,
				BlockReadBytes: s.BlockReadBytes, BlockWriteBytes: s.BlockWriteBytes, Pids: s.Pids}
		}
		tbl.live = false
		tbl.draw()
		return nil
	}
	errs := make(chan error, len(rest))
	for _, name := range rest {
		path, err := c.containerPath(name, "stats")
		if err != nil {
			return err
		}
		q := url.Values{"follow": {"1"}, "interval": {strconv.FormatFloat(interval, 'f', -1, 64)}}
		go func() {
			errs <- c.events(path+"?"+q.Encode(), func(ev sseEvent) (bool, error) {
				switch ev.name {
				case "stats":
					var s protocol.StatsSample
					if json.Unmarshal(ev.data, &s) == nil {
						tbl.update(name, s)
					}
				case "result":
					return false, resultError(ev.data)
				case "error":
					return false, errors.New(string(ev.data))
				}
				return true, nil
			})
		}()
	}
	var first error
	for range rest {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// statsTable renders samples like docker stats: in place on a terminal,
// one line per sample otherwise.
type statsTable struct {
	mu    sync.Mutex
	w     io.Writer
	names []string
	rows  map[string]protocol.StatsSample
	live  bool
	drawn int // lines drawn last time (live)
}

func (t *statsTable) update(name string, s protocol.StatsSample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows[name] = s
	if !t.live {
		// One aligned line per sample, under a header printed once.
		tw := tabwriter.NewWriter(t.w, 18, 4, 2, ' ', 0)
		if t.drawn == 0 {
			fmt.Fprintln(tw, statsHeader)
			t.drawn = 1
		}
		fmt.Fprintln(tw, statsLine(name, s))
		_ = tw.Flush()
		return
	}
	t.draw()
}

const statsHeader = "CONTAINER\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tBLOCK I/O\tPIDS"

func statsLine(name string, s protocol.StatsSample) string {
	memPct := 0.0
	if s.MemoryLimitBytes > 0 {
		memPct = float64(s.MemoryBytes) / float64(s.MemoryLimitBytes) * 100
	}
	return fmt.Sprintf("%s\t%.2f%%\t%s / %s\t%.2f%%\t%s / %s\t%s / %s\t%d", name, s.CPU*100,
		binSize(s.MemoryBytes), binSize(s.MemoryLimitBytes), memPct,
		decSize(s.NetRxBytes), decSize(s.NetTxBytes), decSize(s.BlockReadBytes), decSize(s.BlockWriteBytes), s.Pids)
}

// draw rewrites the table in place (live) or prints it once.
func (t *statsTable) draw() {
	var b strings.Builder
	if t.live && t.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", t.drawn) // back to the table's first line
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, statsHeader)
	for _, n := range t.names {
		if s, ok := t.rows[n]; ok {
			fmt.Fprintln(tw, statsLine(n, s))
		} else {
			fmt.Fprintf(tw, "%s\t--\t-- / --\t--\t-- / --\t-- / --\t--\n", n)
		}
	}
	_ = tw.Flush()
	out := b.String()
	if t.live {
		out = strings.ReplaceAll(out, "\n", "\x1b[K\n") // clear what the last draw left
	}
	t.drawn = 1 + len(t.names)
	_, _ = io.WriteString(t.w, out)
}

func binSize(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.4g%s", f, units[i])
}

func decSize(n uint64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.4g%s", f, units[i])
}
