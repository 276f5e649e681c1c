// Package server runs the whole of Caravan in one process: an embedded NATS
// server with JetStream (unless an external one is configured) and the
// discovery, promoter, verifier and gateway services side by side, each with
// the dependencies it would get as a standalone binary.
package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kelseyhightower/envconfig"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/services/discovery"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/promoter"
	"github.com/caravan-cd/caravan/services/verifier"
)

// Config is the all-in-one server's configuration (prefix CARAVAN_): the
// gateway's (which holds the shared settings), the embedded NATS server, and
// the other services' own settings, read from the same variables.
type Config struct {
	gateway.Config
	// EmbeddedNATSAddr, when set, is where the embedded NATS server listens
	// for clients (standalone services, the nats CLI), which must then
	// authenticate with the NKey seed generated into <data dir>/nats-client.nk.
	// Empty: no listener at all; the services talk to the server
	// in-process. Port -1 picks a free one.
	EmbeddedNATSAddr string `envconfig:"EMBEDDED_NATS_ADDR" default:"" desc:"listen address of the embedded NATS server, which then requires the NKey of <data dir>/nats-client.nk; empty: no TCP listener, in-process only (used only when CARAVAN_NATS_URL is empty)"`
	// MemoryLimit is the soft limit of the process's Go memory
	// (runtime/debug.SetMemoryLimit): near it the garbage collector runs
	// sooner instead of letting the heap grow to twice what is live, which
	// is where most of the server's peak memory went under load. It is
	// not a hard cap: live data beyond it is kept. GOMEMLIMIT, when set,
	// wins.
	MemoryLimit int64 `envconfig:"MEMORY_LIMIT" default:"67108864" desc:"soft limit in bytes of the server's Go memory (the garbage collector works harder near it); 0: none; GOMEMLIMIT, when set, wins"`

	// Discovery, Promoter and Verifier are those services' own settings,
	// filled by LoadServices (Run does it when they were not). Their shared
	// part is always the server's Common.
	Discovery discovery.Config `ignored:"true"`
	Promoter  promoter.Config  `ignored:"true"`
	Verifier  verifier.Config  `ignored:"true"`
	loaded    bool
}

// LoadServices reads the discovery, promoter and verifier settings from the
// CARAVAN_* variables.
func (c *Config) LoadServices() error {
	if err := service.Retired(); err != nil {
		return err
	}
	for _, s := range []any{&c.Discovery, &c.Promoter, &c.Verifier} {
		if err := envconfig.Process("CARAVAN", s); err != nil {
			return err
		}
	}
	c.loaded = true
	c.shareCommon()
	return nil
}

func (c *Config) shareCommon() {
	c.Discovery.Common = c.Common
	c.Promoter.Common = c.Common
	c.Verifier.Common = c.Common
}

// Validate checks the configuration, the services' settings included. An
// empty admin token is allowed: Run generates one.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, c.Common.Validate())
	if c.MemoryLimit < 0 {
		errs = append(errs, errors.New("CARAVAN_MEMORY_LIMIT: must not be negative (0: no limit)"))
	}
	if c.URL == "" && c.EmbeddedNATSAddr != "" {
		if _, _, err := net.SplitHostPort(c.EmbeddedNATSAddr); err != nil {
			errs = append(errs, fmt.Errorf("CARAVAN_EMBEDDED_NATS_ADDR: %w", err))
		}
	}
	if c.loaded {
		c.shareCommon()
		// The shared part was checked above; report each service's own
		// problems once.
		for _, v := range []interface{ Validate() error }{c.Discovery, c.Promoter, c.Verifier} {
			if err := v.Validate(); err != nil && c.Common.Validate() == nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Options are what a caller (the CLI, a test) hands Run beside the config.
type Options struct {
	Logger *slog.Logger
	// Listener, if set, serves the gateway instead of CARAVAN_HTTP_ADDR.
	Listener net.Listener
	// Started, if set, is called once every service runs.
	Started func(Info)
	// ServiceConn, if set, gives each service (gateway, discovery,
	// promoter, verifier) its own NATS connection, as a distributed
	// deployment does with one NATS user per service; the server's own
	// connection then only declares the stream and buckets. The server
	// closes the connections it gets.
	ServiceConn func(ctx context.Context, service string) (*nats.Conn, error)
}

// Info describes a started server.
type Info struct {
	// NATSURL is where NATS clients outside the process connect: the
	// external server's URL, the embedded server's listen address, or ""
	// when the embedded server does not listen (the default).
	NATSURL string
	// NATSNKeyFile holds the NKey seed clients of the listening embedded
	// server authenticate with ("" when it does not listen).
	NATSNKeyFile string
	// AdminTokenFile is where the generated admin token is ("" when
	// CARAVAN_ADMIN_TOKEN was set).
	AdminTokenFile string
	// AdminToken is the admin's bearer token.
	AdminToken string
	// APIURL is the gateway's base URL, e.g. http://127.0.0.1:8080.
	APIURL string
	// LoginURL is a one-time web UI sign-in link for the admin (valid 10
	// minutes).
	LoginURL string

	connect func(opts ...nats.Option) (*nats.Conn, error)
}

// ConnectNATS connects a client in this process (a test, say) to the NATS
// server the services use: in-process to the embedded server, whether or
// not it listens.
func (i Info) ConnectNATS(opts ...nats.Option) (*nats.Conn, error) {
	if i.connect == nil {
		return nil, errors.New("server not started")
	}
	return i.connect(opts...)
}

// Run runs Caravan until ctx ends, then stops every service, drains, and
// stops the embedded NATS server.
func Run(ctx context.Context, cfg Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = telemetry.NewLogger(os.Stderr, cfg.LogConfig)
	}
	shutdownTracing, err := telemetry.SetupTracing(ctx, "caravan")
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	if !cfg.loaded {
		if err := cfg.LoadServices(); err != nil {
			return err
		}
	}
	cfg.shareCommon()
	if cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		prev := debug.SetMemoryLimit(cfg.MemoryLimit)
		defer debug.SetMemoryLimit(prev)
	}

	// Most of the executable's pages that start-up mapped are not used
	// again: let the kernel map back only those that are.
	releaseExe(log)
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// Listen before anything starts: a taken port fails at once, and the
	// address (port 0 included) is known to Started.
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("CARAVAN_HTTP_ADDR: %w", err)
		}
		defer func() { _ = ln.Close() }() // in case the gateway never started
	}
	info := Info{APIURL: apiURL(ln.Addr().String())}
	if cfg.AdminToken == "" {
		path := filepath.Join(cfg.DataDir, "admin-token")
		token, created, err := loadOrCreateToken(path)
		if err != nil {
			return err
		}
		cfg.AdminToken = token
		info.AdminTokenFile = path
		if created {
			log.Info("generated an admin token", "file", path)
		} else {
			log.Info("using the admin token", "file", path)
		}
	}

	info.AdminToken = cfg.AdminToken
	// A one-time link signs the admin in to the web UI without copying
	// the token (single use, 10 minutes, void after a restart).
	links := gateway.NewLoginLinks()
	if code, err := links.Issue(cfg.AdminToken, "admin", 10*time.Minute); err == nil {
		info.LoginURL = info.APIURL + "/login/link/" + code
		log.Info("web UI: sign in as admin with this link (works once, for 10 minutes)", "url", info.LoginURL)
	}

	var nc *nats.Conn
	own := []string{ln.Addr().String(), cfg.HTTPAddr}
	if cfg.URL == "" {
		emb, err := startEmbedded(cfg)
		if err != nil {
			return err
		}
		ns := emb.server
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		store := filepath.Join(cfg.DataDir, "nats")
		info.connect = func(opts ...nats.Option) (*nats.Conn, error) {
			return nats.Connect(ns.ClientURL(), slices.Concat([]nats.Option{nats.InProcessServer(ns)}, emb.auth, opts)...)
		}
		if addr := ns.Addr(); addr != nil {
			info.NATSURL, info.NATSNKeyFile = ns.ClientURL(), emb.nkeyFile
			own = append(own, addr.String())
			log.Info("embedded NATS started, listening; clients must authenticate with its NKey", "url", info.NATSURL, "nkey_file", emb.nkeyFile, "store", store,
				"connect", fmt.Sprintf("CARAVAN_NATS_URL=%s CARAVAN_NATS_NKEY=%s, or nats --server %s --nkey %s", info.NATSURL, emb.nkeyFile, info.NATSURL, emb.nkeyFile))
		} else {
			log.Info("embedded NATS started in-process, without a TCP listener (CARAVAN_EMBEDDED_NATS_ADDR opens one, with NKey authentication)", "store", store)
		}
		nc, err = info.ConnectNATS(nats.Name("caravan"), nats.MaxReconnects(-1))
		if err != nil {
			return fmt.Errorf("connect to embedded NATS: %w", err)
		}
	} else {
		info.NATSURL = cfg.URL
		nc, err = events.Connect(ctx, cfg.NATSConfig, "caravan")
		if err != nil {
			return err
		}
		natsCfg := cfg.NATSConfig
		info.connect = func(opts ...nats.Option) (*nats.Conn, error) {
			return events.Connect(context.Background(), natsCfg, "caravan-client", opts...)
		}
	}
	defer nc.Close()

	reg := prometheus.NewRegistry()
	env, err := service.Provision(ctx, nc, "caravan", cfg.Common, reg)
	if err != nil {
		return err
	}
	// Outbound requests made for tenants never reach this process's own
	// listeners (the API, the embedded NATS).
	env.Egress = env.Egress.Protect(own...)
	log.Info("egress policy", "allow", cfg.Egress.Allow, "deny", cfg.Egress.Deny, "timeout", env.Egress.Timeout(), "max_bytes", env.Egress.MaxBytes())
	for _, dir := range []string{"discovery", "promoter", "verifier"} {
		if err := os.MkdirAll(cfg.Dir(dir), 0o750); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
	}
	envs := map[string]*service.Env{}
	for _, name := range service.Services {
		if opts.ServiceConn == nil {
			e := *env
			e.Bus = events.NewBus(env.JS, name, events.WithMetrics(env.Metrics))
			envs[name] = &e
			continue
		}
		snc, err := opts.ServiceConn(ctx, name)
		if err != nil {
			return fmt.Errorf("connect %s to NATS: %w", name, err)
		}
		defer snc.Close()
		e, err := service.Connect(ctx, snc, name, cfg.Common, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		e.Egress, e.Registry = env.Egress, reg
		envs[name] = e
	}
	as := func(name string) *service.Env { return envs[name] }

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	start := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			err := run(ctx)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
				log.Error("service stopped", "service", name, "err", err)
			}
			cancel() // one service down takes the process down
		})
	}
	// The gateway's list index and the promoter's auto-promotion index
	// both hold every freight: in one process, they hold the same objects.
	shared := freightindex.NewShared()
	if opts.ServiceConn == nil {
		// They and discovery's alias index watch the freight bucket
		// through one subscription, not one each (a burst of writes left
		// each holding its own copy of the values it had not read yet).
		watches := 2
		if cfg.ListIndex {
			watches++
		}
		env.Store.ShareWatch(state.Freight, watches)
	}
	start("discovery", func(ctx context.Context) error {
		return discovery.Run(ctx, discovery.Deps{Config: cfg.Discovery, Logger: log, Env: as("discovery")})
	})
	start("promoter", func(ctx context.Context) error {
		return promoter.Run(ctx, promoter.Deps{Config: cfg.Promoter, Logger: log, Env: as("promoter"), SharedFreight: shared})
	})
	start("verifier", func(ctx context.Context) error {
		return verifier.Run(ctx, verifier.Deps{Config: cfg.Verifier, Logger: log, Env: as("verifier")})
	})
	start("gateway", func(ctx context.Context) error {
		return gateway.Run(ctx, gateway.Deps{Config: cfg.Config, Logger: log, Env: as("gateway"), Registry: reg, Listener: ln, LoginLinks: links, SharedFreight: shared})
	})
	if opts.Started != nil {
		opts.Started(info)
	}
	// Once the services are ready (the API's /readyz answers 200), drop
	// the executable's pages only starting them needed.
	wg.Go(func() {
		for ctx.Err() == nil {
			if ready(ctx, info.APIURL) {
				releaseExe(log)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	wg.Wait()
	log.Info("caravan stopped")
	return errors.Join(errs...)
}

// releaseExe releases the executable's pages (releaseExecutablePages),
// logging what happened.
func releaseExe(log *slog.Logger) {
	if n, err := releaseExecutablePages(); err != nil {
		log.Warn("could not release the executable's pages", "err", err)
	} else {
		log.Debug("released the executable's pages", "bytes", n)
	}
}

// ready reports whether the API at url answers /readyz with 200.
func ready(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// apiURL is the URL a local client reaches the listen address addr at.
func apiURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// embedded is a started embedded NATS server and what clients need to
// authenticate to it.
type embedded struct {
	server *natsserver.Server
	// auth are the options of an authenticated client (none when the
	// server does not listen).
	auth     []nats.Option
	nkeyFile string
}

// startEmbedded starts the embedded NATS server: without a listener when
// CARAVAN_EMBEDDED_NATS_ADDR is empty, else listening there and requiring
// the NKey of <data dir>/nats-client.nk (generated on first use, mode
// 0600) from every client, in-process ones included.
func startEmbedded(cfg Config) (*embedded, error) {
	opts := &natsserver.Options{
		ServerName: "caravan",
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		NoLog:      true,
		NoSigs:     true,
	}
	emb := &embedded{}
	if cfg.EmbeddedNATSAddr == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.EmbeddedNATSAddr)
		if err != nil {
			return nil, fmt.Errorf("CARAVAN_EMBEDDED_NATS_ADDR: %w", err)
		}
		port := natsserver.RANDOM_PORT
		if portStr != "-1" && portStr != "0" {
			if _, err := fmt.Sscan(portStr, &port); err != nil {
				return nil, fmt.Errorf("CARAVAN_EMBEDDED_NATS_ADDR: bad port %q", portStr)
			}
		}
		opts.Host, opts.Port = host, port
		emb.nkeyFile = filepath.Join(cfg.DataDir, "nats-client.nk")
		kp, err := loadOrCreateNKey(emb.nkeyFile)
		if err != nil {
			return nil, err
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
		opts.Nkeys = []*natsserver.NkeyUser{{Nkey: pub}}
		emb.auth = []nats.Option{nats.Nkey(pub, kp.Sign)}
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start on %s (is the port taken? set CARAVAN_EMBEDDED_NATS_ADDR)", cfg.EmbeddedNATSAddr)
	}
	emb.server = ns
	return emb, nil
}

// loadOrCreateNKey reads the user NKey seed at path, or generates one
// there (mode 0600).
func loadOrCreateNKey(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.ParseDecoratedNKey(b)
		if err != nil {
			return nil, fmt.Errorf("NATS NKey seed file %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read NATS NKey seed: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("generate NATS NKey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("generate NATS NKey: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadOrCreateNKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("create NATS NKey seed file: %w", err)
	}
	_, werr := f.Write(append(seed, '\n'))
	if err := errors.Join(werr, f.Close()); err != nil {
		return nil, fmt.Errorf("write NATS NKey seed file: %w", err)
	}
	return kp, nil
}

// loadOrCreateToken reads the admin token file, or creates it (mode 0600)
// with a new random token.
func loadOrCreateToken(path string) (string, bool, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, false, nil
		}
		return "", false, fmt.Errorf("admin token file %s is empty", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("read admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("generate admin token: %w", err)
	}
	token := "cvn_" + base64.RawURLEncoding.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadOrCreateToken(path)
	}
	if err != nil {
		return "", false, fmt.Errorf("create admin token file: %w", err)
	}
	_, werr := f.WriteString(token + "\n")
	if err := errors.Join(werr, f.Close()); err != nil {
		return "", false, fmt.Errorf("write admin token file: %w", err)
	}
	return token, true, nil
}
