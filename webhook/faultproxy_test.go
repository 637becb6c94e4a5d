package webhook

import (
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy is a TCP proxy between clients and the API server that can cut
// the connection the two ways a network fails:
//
//   - refuse: the port is closed and open connections are reset, as when
//     the API server's address has nothing listening;
//   - blackHole: connections are accepted and bytes are taken in, but
//     nothing reaches the other side, as when packets are dropped.
//
// heal passes bytes again: connections held in the black hole go on where
// they stopped.
type faultProxy struct {
	t        *testing.T
	upstream string
	addr     string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	// gate is closed while bytes pass; a black hole replaces it with an open
	// channel that heal closes.
	gate   chan struct{}
	closed bool
	wg     sync.WaitGroup
}

func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	p := &faultProxy{t: t, upstream: upstream, conns: map[net.Conn]struct{}{}, gate: make(chan struct{})}
	close(p.gate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) serve(ln net.Listener) {
	p.ln = ln
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = struct{}{}
			p.mu.Unlock()
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

// pipe forwards one client connection once the gate lets it.
func (p *faultProxy) pipe(c net.Conn) {
	defer p.forget(c)
	<-p.currentGate()
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	done := make(chan struct{}, 2)
	go func() { p.copy(up, c); done <- struct{}{} }()
	go func() { p.copy(c, up); done <- struct{}{} }()
	<-done
}

// copy moves bytes from src to dst, holding them while the gate is shut.
func (p *faultProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.currentGate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

func (p *faultProxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *faultProxy) currentGate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate
}

// refuse closes the port and resets every open connection.
func (p *faultProxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN
		}
		_ = c.Close()
	}
}

// blackHole opens the port and lets nothing through.
func (p *faultProxy) blackHole() {
	p.mu.Lock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
	p.mu.Unlock()
	p.listen()
}

// heal opens the port and lets everything through.
func (p *faultProxy) heal() {
	p.mu.Lock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
	p.mu.Unlock()
	p.listen()
}

// listen opens the port again at the same address, after refuse.
func (p *faultProxy) listen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil || p.closed {
		return
	}
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago; wait out a racing bind
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Errorf("fault proxy: listening on %s again: %v", p.addr, err)
		return
	}
	p.serve(ln)
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	select {
	case <-p.gate:
	default:
		close(p.gate) // release held copies
	}
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
