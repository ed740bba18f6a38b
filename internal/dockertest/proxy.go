package dockertest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// SocketProxy serves a unix socket that forwards to the Docker daemon's,
// so the daemon can be made unreachable for one client alone while it
// keeps running (and publishing events): Cut closes the socket and every
// connection through it, Restore listens again. It notes when a request
// containing one of the watched strings went through (Seen). Close cuts
// and waits for its goroutines.
type SocketProxy struct {
	Path   string // the socket to point a client at
	target string
	watch  [][]byte
	wg     sync.WaitGroup

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	seen  map[string][]time.Time
}

// NewSocketProxy listens on path and forwards to the daemon's socket target.
func NewSocketProxy(path, target string, watch ...string) (*SocketProxy, error) {
	p := &SocketProxy{Path: path, target: target, conns: map[net.Conn]bool{}, seen: map[string][]time.Time{}}
	for _, w := range watch {
		p.watch = append(p.watch, []byte(w))
	}
	return p, p.Restore()
}

// Restore listens again after Cut.
func (p *SocketProxy) Restore() error {
	_ = os.Remove(p.Path)
	ln, err := net.Listen("unix", p.Path)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() { p.serve(ln) })
	return nil
}

// Cut makes the daemon unreachable through the proxy: the socket goes, and
// every connection.
func (p *SocketProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	_ = os.Remove(p.Path)
}

// Close is Cut that also waits for the proxy's goroutines to end.
func (p *SocketProxy) Close() {
	p.Cut()
	p.wg.Wait()
}

// Seen returns when requests containing the watched string w went through.
func (p *SocketProxy) Seen(w string) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.seen[w]...)
}

// SeenAfter is the first time after t a request containing w went through.
func (p *SocketProxy) SeenAfter(w string, t time.Time) (time.Time, error) {
	for _, at := range p.Seen(w) {
		if at.After(t) {
			return at, nil
		}
	}
	return time.Time{}, errors.New("no such request")
}

func (p *SocketProxy) serve(ln net.Listener) {
	for {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("unix", p.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln { // cut meanwhile
			p.mu.Unlock()
			_ = a.Close()
			_ = b.Close()
			return
		}
		p.conns[a], p.conns[b] = true, true
		p.mu.Unlock()
		p.wg.Go(func() {
			p.copyNoting(b, a)
			p.drop(a, b)
		})
		p.wg.Go(func() {
			_, _ = io.Copy(a, b)
			p.drop(a, b)
		})
	}
}

func (p *SocketProxy) drop(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// copyNoting copies the client's requests to the daemon, noting the
// watched ones.
func (p *SocketProxy) copyNoting(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for _, w := range p.watch {
				if bytes.Contains(buf[:n], w) {
					p.mu.Lock()
					p.seen[string(w)] = append(p.seen[string(w)], time.Now())
					p.mu.Unlock()
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
