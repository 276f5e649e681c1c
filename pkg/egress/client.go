package egress

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// DialContext dials address as net.Dialer does, checking each address it
// connects to (after name resolution) against the policy.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	p = p.orDefault()
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		ControlContext: func(_ context.Context, _, addr string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return &RefusedError{Addr: addr, Host: host, Reason: "not an IP address"}
			}
			return p.Check(host, ap)
		},
	}
	return d.DialContext(ctx, network, address)
}

// proxy is the transport's Proxy: the environment's proxy, after checking
// the target (its name, or the addresses it resolves to now; the proxy
// resolves it again, which the policy cannot see).
func (p *Policy) proxy(req *http.Request) (*url.URL, error) {
	u, err := http.ProxyFromEnvironment(req)
	if err != nil || u == nil {
		return u, err
	}
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		port = "80"
		if req.URL.Scheme == "https" {
			port = "443"
		}
	}
	n, _ := strconv.ParseUint(port, 10, 16)
	if ip, err := netip.ParseAddr(host); err == nil {
		return u, p.Check("", netip.AddrPortFrom(ip, uint16(n)))
	}
	ips, err := net.DefaultResolver.LookupNetIP(req.Context(), "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if err := p.Check(host, netip.AddrPortFrom(ip, uint16(n))); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// Transport returns a new transport (a clone of http.DefaultTransport)
// that dials through the policy; insecure skips TLS verification. It does
// not limit bodies or time: Client does.
func (p *Policy) Transport(insecure bool) *http.Transport {
	p = p.orDefault()
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = p.DialContext
	t.Proxy = p.proxy
	t.MaxIdleConnsPerHost = 16
	if insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the step or metric asks for it
	}
	return t
}

// Client returns the policy's HTTP client: its transport dials through the
// policy, a request takes at most Timeout, and reading more than MaxBytes
// of a response body fails with an error wrapping ErrTooLarge. insecure
// skips TLS verification. The client is shared: callers must not change
// it.
func (p *Policy) Client(insecure bool) *http.Client {
	p = p.orDefault()
	i := 0
	if insecure {
		i = 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clients[i] == nil {
		p.clients[i] = &http.Client{
			Transport: Limit(p.Transport(insecure), p.r.maxBytes),
			Timeout:   p.r.timeout,
		}
	}
	return p.clients[i]
}

// Limit wraps base so that a response body longer than maxBytes fails
// with an error wrapping ErrTooLarge (at once when its Content-Length says
// so). maxBytes 0 or less leaves bodies alone.
func Limit(base http.RoundTripper, maxBytes int64) http.RoundTripper {
	if maxBytes <= 0 {
		return base
	}
	return limit{base: base, max: maxBytes}
}

type limit struct {
	base http.RoundTripper
	max  int64
}

func (l limit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > l.max {
		_ = resp.Body.Close()
		return nil, tooLarge(l.max)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: l.max, max: l.max}
	return resp, nil
}

func tooLarge(limit int64) error {
	return fmt.Errorf("%w: more than %d bytes (CARAVAN_EGRESS_MAX_BYTES)", ErrTooLarge, limit)
}

type limitedBody struct {
	rc        io.ReadCloser
	left, max int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, tooLarge(b.max)
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
