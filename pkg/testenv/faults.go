package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultCounts is what a FaultProxy did to the messages it matched.
type FaultCounts struct {
	Matched, Dropped, Duplicated, Delayed int64
}

func (c FaultCounts) String() string {
	return fmt.Sprintf("%d matched: %d dropped, %d duplicated, %d delayed", c.Matched, c.Dropped, c.Duplicated, c.Delayed)
}

// FaultProxy is a TCP proxy in front of a NATS server that drops,
// duplicates or delays a fraction of what its clients publish on chosen
// subjects, as a lossy network or a flaky peer would: a dropped publish
// gets no answer (the client times out and tries again), a duplicate
// reaches the server twice, a delayed one arrives up to MaxDelay late and
// out of order. Only the client-to-server direction is touched (PUB and
// HPUB operations); acknowledgements are publishes to $JS.ACK.… and can
// be matched like any subject. It is safe for concurrent use.
type FaultProxy struct {
	ln       net.Listener
	upstream string
	rate     float64
	prefixes []string
	maxDelay time.Duration

	matched, dropped, duplicated, delayed atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  chan struct{}
}

// NATSFaults starts a FaultProxy to the NATS server at url (nats://host:port)
// upsetting rate (0–1) of the messages published on subjects starting with
// one of prefixes (e.g. "caravan.events.", "$JS.ACK."), a third each
// dropped, duplicated and delayed (up to 500ms). It stops at test cleanup.
func NATSFaults(t testing.TB, url string, rate float64, prefixes ...string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: fault proxy: %v", err)
	}
	p := &FaultProxy{ln: ln, upstream: strings.TrimPrefix(url, "nats://"), rate: rate, prefixes: prefixes,
		maxDelay: 500 * time.Millisecond, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL is where clients connect.
func (p *FaultProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Counts reports what the proxy did so far.
func (p *FaultProxy) Counts() FaultCounts {
	return FaultCounts{Matched: p.matched.Load(), Dropped: p.dropped.Load(), Duplicated: p.duplicated.Load(), Delayed: p.delayed.Load()}
}

// Close stops the proxy and cuts its connections.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return
	default:
	}
	close(p.done)
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
}

func (p *FaultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		_ = c.Close()
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *FaultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *FaultProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			_ = server.Close()
			continue
		}
		go func() {
			defer p.untrack(client)
			defer p.untrack(server)
			_, _ = io.Copy(client, server)
		}()
		go func() {
			defer p.untrack(client)
			defer p.untrack(server)
			p.forward(client, server)
		}()
	}
}

// forward passes the client's protocol operations to the server, upsetting
// the matched publishes.
func (p *FaultProxy) forward(client io.Reader, server net.Conn) {
	r := bufio.NewReaderSize(client, 64<<10)
	var mu sync.Mutex // one operation at a time on the server connection
	write := func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = server.Write(b)
	}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		op, subject, size := parseOp(line)
		if size < 0 {
			write(line)
			continue
		}
		payload := make([]byte, size+2) // payload and its CRLF
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		msg := append(append([]byte(nil), line...), payload...)
		if (op != "PUB" && op != "HPUB") || !p.matches(subject) {
			write(msg)
			continue
		}
		p.matched.Add(1)
		if rand.Float64() >= p.rate {
			write(msg)
			continue
		}
		switch rand.IntN(3) {
		case 0:
			p.dropped.Add(1)
		case 1:
			p.duplicated.Add(1)
			write(msg)
			write(msg)
		default:
			p.delayed.Add(1)
			delay := time.Duration(rand.Int64N(int64(p.maxDelay)))
			time.AfterFunc(delay, func() { write(msg) })
		}
	}
}

func (p *FaultProxy) matches(subject string) bool {
	for _, pre := range p.prefixes {
		if strings.HasPrefix(subject, pre) {
			return true
		}
	}
	return false
}

// parseOp returns a client operation's name, subject and payload size (-1
// for operations without payload).
func parseOp(line []byte) (op, subject string, size int) {
	fields := strings.Fields(string(bytes.TrimRight(line, "\r\n")))
	if len(fields) == 0 {
		return "", "", -1
	}
	op = strings.ToUpper(fields[0])
	var n string
	switch op {
	case "PUB": // PUB <subject> [reply] <size>
		if len(fields) < 3 {
			return op, "", -1
		}
		n = fields[len(fields)-1]
	case "HPUB": // HPUB <subject> [reply] <header size> <total size>
		if len(fields) < 4 {
			return op, "", -1
		}
		n = fields[len(fields)-1]
	default:
		return op, "", -1
	}
	size, err := strconv.Atoi(n)
	if err != nil {
		return op, "", -1
	}
	return op, fields[1], size
}
