package main

import (
	"net"
	"sync"
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
