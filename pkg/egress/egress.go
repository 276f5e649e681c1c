// Package egress is the policy every outbound request the server makes on
// a tenant's behalf passes (the http and http-download steps, the pull
// request APIs, web and prometheus metrics, the OIDC issuer): where it may
// connect, how long it may take and how large its response may be.
//
// The address check runs in the dialer's Control hook, on the IP address a
// connection is about to be made to, after name resolution: a host name
// that resolves (or re-resolves, DNS rebinding) to a refused address is
// refused all the same. By default the policy refuses loopback,
// link-local (169.254.169.254, the cloud metadata service, among them),
// unspecified, broadcast and multicast addresses, this host's own
// interface addresses, the well-known NATS ports (4222, 6222, 7422, 8222)
// on any host and the addresses given to Protect (the server's own listen
// addresses, its NATS servers). An allow list (CARAVAN_EGRESS_ALLOW) opens
// CIDRs, host names and host:port pairs; a deny list (CARAVAN_EGRESS_DENY)
// closes CIDRs whatever else says.
//
// A nil *Policy is the default policy (New(Config{})).
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultTimeout  = 5 * time.Minute
	DefaultMaxBytes = 100 << 20
)

// Config is the egress configuration every service reads (prefix
// CARAVAN_EGRESS_).
type Config struct {
	// Allow opens destinations the policy refuses by default.
	Allow string `envconfig:"ALLOW" desc:"comma-separated CIDRs, IP addresses, host names (*.example.com too) and host:port pairs outbound requests may reach although the egress policy refuses them by default"`
	// Deny closes CIDRs (a cluster's pod and service ranges, say) to
	// outbound requests, whatever Allow says.
	Deny string `envconfig:"DENY" desc:"comma-separated CIDRs and IP addresses outbound requests may never reach"`
	// Timeout bounds one outbound request, response body included.
	Timeout time.Duration `envconfig:"TIMEOUT" default:"5m" desc:"longest time one outbound request (http steps, web and prometheus metrics) may take, body included"`
	// MaxBytes bounds one response body.
	MaxBytes int64 `envconfig:"MAX_BYTES" default:"104857600" desc:"largest response body of one outbound request, in bytes"`
}

// Validate checks the configuration.
func (c Config) Validate() error {
	_, err := New(c)
	return err
}

// Sentinel errors; RefusedError and a too large body wrap them.
var (
	ErrRefused  = errors.New("refused by the egress policy")
	ErrTooLarge = errors.New("response body too large")
)

// RefusedError is a connection the policy refused.
type RefusedError struct {
	// Addr is the address refused (ip:port), Host the name it was dialed
	// by ("" for an IP address).
	Addr, Host string
	// Reason says which rule refused it.
	Reason string
}

func (e *RefusedError) Error() string {
	what := e.Addr
	if e.Host != "" {
		what = e.Host + " (" + e.Addr + ")"
	}
	return fmt.Sprintf("egress policy refuses %s: %s; CARAVAN_EGRESS_ALLOW opens it", what, e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// natsPorts are NATS's well-known client, cluster, leaf node and
// monitoring ports.
var natsPorts = []uint16{4222, 6222, 7422, 8222}

// metadata are cloud metadata addresses outside the link-local range.
var metadata = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),   // AWS, IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("168.63.129.16"),   // Azure host endpoint
}

var (
	thisNetwork  = netip.MustParsePrefix("0.0.0.0/8")
	metadataIPv4 = netip.MustParseAddr("169.254.169.254")
	broadcast    = netip.MustParseAddr("255.255.255.255")
)

// Policy decides which addresses outbound connections may reach and
// builds HTTP clients that enforce it. It is safe for concurrent use.
type Policy struct {
	r rules

	mu      sync.Mutex
	clients [2]*http.Client // secure, insecure
}

type rules struct {
	timeout  time.Duration
	maxBytes int64

	allowNets  []netip.Prefix
	allowHosts map[string]bool // lower-case names; "*.x" matches below x
	allowPairs map[string]bool // "host:port", "ip:port"
	denyNets   []netip.Prefix

	ownPorts  map[uint16]bool // the server's listen ports, on any local address
	protected map[string]bool // "host:port", "ip:port" of remote NATS servers
	natsPorts map[uint16]bool
	local     map[netip.Addr]bool // this host's interface addresses
}

func (r rules) clone() rules {
	c := r
	c.allowNets = slices.Clone(r.allowNets)
	c.denyNets = slices.Clone(r.denyNets)
	for _, m := range []*map[string]bool{&c.allowHosts, &c.allowPairs, &c.protected} {
		old := *m
		*m = make(map[string]bool, len(old))
		for k, v := range old {
			(*m)[k] = v
		}
	}
	ports := make(map[uint16]bool, len(r.ownPorts))
	for k, v := range r.ownPorts {
		ports[k] = v
	}
	c.ownPorts = ports
	return c
}

// New builds the policy of cfg: zero Timeout and MaxBytes take the
// defaults. An entry of Allow or Deny that does not parse is an error
// naming the variable.
func New(cfg Config) (*Policy, error) {
	r := rules{
		timeout:    cfg.Timeout,
		maxBytes:   cfg.MaxBytes,
		allowHosts: map[string]bool{},
		allowPairs: map[string]bool{},
		ownPorts:   map[uint16]bool{},
		protected:  map[string]bool{},
		natsPorts:  map[uint16]bool{},
		local:      localAddrs(),
	}
	if r.timeout == 0 {
		r.timeout = DefaultTimeout
	}
	if r.maxBytes == 0 {
		r.maxBytes = DefaultMaxBytes
	}
	var errs []error
	if r.timeout < 0 {
		errs = append(errs, errors.New("CARAVAN_EGRESS_TIMEOUT: must not be negative"))
	}
	if r.maxBytes < 0 {
		errs = append(errs, errors.New("CARAVAN_EGRESS_MAX_BYTES: must not be negative"))
	}
	for _, p := range natsPorts {
		r.natsPorts[p] = true
	}
	for _, e := range split(cfg.Allow) {
		if err := r.allow(e); err != nil {
			errs = append(errs, fmt.Errorf("CARAVAN_EGRESS_ALLOW: %w", err))
		}
	}
	for _, e := range split(cfg.Deny) {
		p, err := parsePrefix(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("CARAVAN_EGRESS_DENY: %q is not a CIDR or an IP address", e))
			continue
		}
		r.denyNets = append(r.denyNets, p)
	}
	// A proxy from the environment is the operator's choice: the
	// connection to it is allowed (the proxy decides where it goes on).
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		if u, err := url.Parse(os.Getenv(v)); err == nil && u.Host != "" {
			port := u.Port()
			if port == "" {
				port = map[string]string{"https": "443", "socks5": "1080"}[u.Scheme]
				if port == "" {
					port = "80"
				}
			}
			r.allowPairs[pair(u.Hostname(), port)] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Policy{r: r}, nil
}

var defaultPolicy = sync.OnceValue(func() *Policy {
	p, _ := New(Config{})
	return p
})

func (p *Policy) orDefault() *Policy {
	if p == nil {
		return defaultPolicy()
	}
	return p
}

func split(list string) []string {
	var out []string
	for e := range strings.SplitSeq(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// allow adds one allow-list entry: a CIDR, an IP address, a host:port
// pair or a host name (a leading "*." matches every name below).
func (r *rules) allow(e string) error {
	if p, err := parsePrefix(e); err == nil {
		r.allowNets = append(r.allowNets, p)
		return nil
	}
	if host, port, err := net.SplitHostPort(e); err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil || !validName(host) && !isIP(host) {
			return fmt.Errorf("%q is not a valid host:port", e)
		}
		r.allowPairs[pair(host, port)] = true
		return nil
	}
	if !validName(strings.TrimPrefix(e, "*.")) {
		return fmt.Errorf("%q is not a CIDR, an IP address, a host name or host:port", e)
	}
	r.allowHosts[normName(e)] = true
	return nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func validName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !nameChar(c) {
				return false
			}
		}
	}
	return true
}

func nameChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func normName(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// pair is the key of a host:port pair: a name lower-cased, an IP address
// in its canonical form.
func pair(host, port string) string {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return netip.AddrPortFrom(a.Unmap().WithZone(""), mustPort(port)).String()
	}
	return normName(host) + ":" + port
}

func mustPort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

// Allow returns a policy that also opens entries (as CARAVAN_EGRESS_ALLOW
// has them): destinations the operator configured (the demo's servers, a
// default Prometheus, the OIDC issuer).
func (p *Policy) Allow(entries ...string) (*Policy, error) {
	p = p.orDefault()
	r := p.r.clone()
	for _, e := range entries {
		if err := r.allow(e); err != nil {
			return nil, err
		}
	}
	return &Policy{r: r}, nil
}

// AllowURL returns a policy that also opens the host:port of rawURL (an
// operator-configured endpoint); p itself when rawURL has no host.
func (p *Policy) AllowURL(rawURL string) *Policy {
	p = p.orDefault()
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return p
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	r := p.r.clone()
	r.allowPairs[pair(u.Hostname(), port)] = true
	return &Policy{r: r}
}

// Protect returns a policy that also refuses addrs (host:port): the
// server's own listen addresses (refused on every local address, whatever
// host they name) and the NATS servers it talks to. Only an allow-list
// entry naming the exact host:port opens them again.
func (p *Policy) Protect(addrs ...string) *Policy {
	p = p.orDefault()
	r := p.r.clone()
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			continue
		}
		r.ownPorts[uint16(n)] = true
		if host != "" && host != "localhost" {
			if ip, err := netip.ParseAddr(host); err != nil || !ip.IsUnspecified() {
				r.protected[pair(host, port)] = true
			}
		}
	}
	return &Policy{r: r}
}

// Timeout is the longest one outbound request may take.
func (p *Policy) Timeout() time.Duration { return p.orDefault().r.timeout }

// MaxBytes is the largest response body one outbound request may read.
func (p *Policy) MaxBytes() int64 { return p.orDefault().r.maxBytes }

// Check reports whether a connection to addr, dialed by host name host
// ("" for an IP address), is allowed: nil, or a *RefusedError.
func (p *Policy) Check(host string, addr netip.AddrPort) error {
	r := &p.orDefault().r
	ip := addr.Addr().Unmap().WithZone("")
	port := addr.Port()
	name := normName(host)
	if isIP(name) {
		name = ""
	}
	refuse := func(reason string) error {
		return &RefusedError{Addr: netip.AddrPortFrom(ip, port).String(), Host: host, Reason: reason}
	}
	if containsAddr(r.denyNets, ip) {
		return refuse("in CARAVAN_EGRESS_DENY")
	}
	portStr := strconv.Itoa(int(port))
	if r.allowPairs[pair(ip.String(), portStr)] || name != "" && r.allowPairs[pair(name, portStr)] {
		return nil
	}
	switch {
	case r.ownPorts[port] && r.isLocal(ip):
		return refuse("it is this server's own listen address")
	case r.protected[pair(ip.String(), portStr)] || name != "" && r.protected[pair(name, portStr)]:
		return refuse("it is a NATS server of this deployment")
	case r.natsPorts[port]:
		return refuse(fmt.Sprintf("port %d is a NATS port", port))
	}
	if r.hostAllowed(name) || containsAddr(r.allowNets, ip) {
		return nil
	}
	switch {
	case ip.IsLoopback():
		return refuse("loopback address")
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		return refuse("unspecified address (this host)")
	case ip == metadataIPv4 || slices.Contains(metadata, ip):
		return refuse("cloud metadata service")
	case ip.IsLinkLocalUnicast():
		return refuse("link-local address")
	case ip.IsMulticast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast():
		return refuse("multicast address")
	case ip == broadcast:
		return refuse("broadcast address")
	case r.local[ip]:
		return refuse("one of this host's own addresses")
	}
	return nil
}

func (r *rules) isLocal(ip netip.Addr) bool {
	return ip.IsLoopback() || ip.IsUnspecified() || thisNetwork.Contains(ip) || r.local[ip]
}

func (r *rules) hostAllowed(name string) bool {
	if name == "" {
		return false
	}
	if r.allowHosts[name] {
		return true
	}
	for h := range r.allowHosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok && strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func containsAddr(nets []netip.Prefix, ip netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// localAddrs are this host's interface addresses (none when they cannot
// be listed).
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}
