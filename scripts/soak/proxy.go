package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// netProxy forwards TCP connections from the agent to the server and plays
// the network: it can black-hole a connection (forward nothing either way,
// as a half-open connection behind a dead load balancer: the sender's
// socket buffers fill, nothing is lost yet) and cut it (whatever was not
// forwarded is lost).
type netProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	pairs map[*pair]bool
}

type pair struct {
	a, b net.Conn
	mu   sync.Mutex
	hole chan struct{} // non-nil while black-holed: closed when cut
	cut  bool
}

func newNetProxy(target string) (*netProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &netProxy{ln: ln, target: target, pairs: map[*pair]bool{}}
	go p.serve()
	return p, nil
}

func (p *netProxy) addr() string { return p.ln.Addr().String() }

func (p *netProxy) serve() {
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		pr := &pair{a: a, b: b}
		p.mu.Lock()
		p.pairs[pr] = true
		p.mu.Unlock()
		go func() {
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); pr.copy(b, a) }()
			go func() { defer wg.Done(); pr.copy(a, b) }()
			wg.Wait()
			p.mu.Lock()
			delete(p.pairs, pr)
			p.mu.Unlock()
		}()
	}
}

// copy forwards src to dst; while the pair is black-holed it reads nothing.
func (pr *pair) copy(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		pr.mu.Lock()
		hole := pr.hole
		pr.mu.Unlock()
		if hole != nil {
			<-hole
			return // cut
		}
		n, err := src.Read(buf)
		if n > 0 {
			pr.mu.Lock()
			dead := pr.hole != nil
			pr.mu.Unlock()
			if dead { // read as the hole opened: lost like the rest
				continue
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

// blackhole stops forwarding on every open connection.
func (p *netProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		pr.mu.Lock()
		if pr.hole == nil {
			pr.hole = make(chan struct{})
		}
		pr.mu.Unlock()
	}
}

// cutHoles closes the black-holed connections, losing what they held.
func (p *netProxy) cutHoles() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		pr.mu.Lock()
		if pr.hole != nil && !pr.cut {
			pr.cut = true
			_ = pr.a.Close()
			_ = pr.b.Close()
			close(pr.hole)
		}
		pr.mu.Unlock()
	}
}

func (p *netProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		_ = pr.a.Close()
		_ = pr.b.Close()
	}
}

// dockerProxy serves a unix socket that forwards to the Docker daemon's,
// so the daemon can be made unreachable for the agent alone: cut closes
// the socket and every connection through it, restore listens again. It
// notes when the agent asks for the events stream.
type dockerProxy struct {
	path, target string

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	events []time.Time // requests of /events
}

func newDockerProxy(path, target string) (*dockerProxy, error) {
	d := &dockerProxy{path: path, target: target, conns: map[net.Conn]bool{}}
	return d, d.restore()
}

func (d *dockerProxy) restore() error {
	_ = os.Remove(d.path)
	ln, err := net.Listen("unix", d.path)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.ln = ln
	d.mu.Unlock()
	go d.serve(ln)
	return nil
}

func (d *dockerProxy) serve(ln net.Listener) {
	for {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("unix", d.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		d.mu.Lock()
		d.conns[a], d.conns[b] = true, true
		d.mu.Unlock()
		go func() {
			d.copyNoting(b, a)
			d.drop(a, b)
		}()
		go func() {
			_, _ = io.Copy(a, b)
			d.drop(a, b)
		}()
	}
}

func (d *dockerProxy) drop(cs ...net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(d.conns, c)
	}
}

// copyNoting copies the agent's requests to the daemon and notes the
// events subscriptions.
func (d *dockerProxy) copyNoting(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if bytes.Contains(buf[:n], []byte("/events?")) {
				d.mu.Lock()
				d.events = append(d.events, time.Now())
				d.mu.Unlock()
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

// cut makes the daemon unreachable: the socket goes, and every connection.
func (d *dockerProxy) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ln != nil {
		_ = d.ln.Close()
		d.ln = nil
	}
	for c := range d.conns {
		_ = c.Close()
	}
	clear(d.conns)
	_ = os.Remove(d.path)
}

// eventsSubscribedAfter is the first events subscription after t.
func (d *dockerProxy) eventsSubscribedAfter(t time.Time) (time.Time, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.events {
		if e.After(t) {
			return e, nil
		}
	}
	return time.Time{}, errors.New("no events subscription")
}

func (d *dockerProxy) close() { d.cut() }
