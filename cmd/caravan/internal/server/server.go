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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kelseyhightower/envconfig"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
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
	// EmbeddedNATSAddr is where the embedded NATS server listens for
	// clients (standalone services, the nats CLI). Port -1 picks a free one.
	EmbeddedNATSAddr string `envconfig:"EMBEDDED_NATS_ADDR" default:"127.0.0.1:4222" desc:"listen address of the embedded NATS server (used only when CARAVAN_NATS_URL is empty)"`

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
	if c.URL == "" {
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
}

// Info describes a started server.
type Info struct {
	NATSURL string
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
	if cfg.URL == "" {
		ns, err := startEmbedded(cfg)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		info.NATSURL = ns.ClientURL()
		log.Info("embedded NATS started", "url", info.NATSURL, "store", filepath.Join(cfg.DataDir, "nats"))
		nc, err = nats.Connect(ns.ClientURL(), nats.InProcessServer(ns), nats.Name("caravan"), nats.MaxReconnects(-1))
		if err != nil {
			return fmt.Errorf("connect to embedded NATS: %w", err)
		}
	} else {
		info.NATSURL = cfg.URL
		nc, err = events.Connect(ctx, cfg.NATSConfig, "caravan")
		if err != nil {
			return err
		}
	}
	defer nc.Close()

	reg := prometheus.NewRegistry()
	env, err := service.Connect(ctx, nc, "caravan", cfg.Common, reg)
	if err != nil {
		return err
	}
	for _, dir := range []string{"discovery", "promoter", "verifier"} {
		if err := os.MkdirAll(cfg.Dir(dir), 0o750); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
	}
	as := func(name string) *service.Env {
		e := *env
		e.Bus = events.NewBus(env.JS, name, events.WithMetrics(env.Metrics))
		return &e
	}

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
	start("discovery", func(ctx context.Context) error {
		return discovery.Run(ctx, discovery.Deps{Config: cfg.Discovery, Logger: log, Env: as("discovery")})
	})
	start("promoter", func(ctx context.Context) error {
		return promoter.Run(ctx, promoter.Deps{Config: cfg.Promoter, Logger: log, Env: as("promoter")})
	})
	start("verifier", func(ctx context.Context) error {
		return verifier.Run(ctx, verifier.Deps{Config: cfg.Verifier, Logger: log, Env: as("verifier")})
	})
	start("gateway", func(ctx context.Context) error {
		return gateway.Run(ctx, gateway.Deps{Config: cfg.Config, Logger: log, Env: as("gateway"), Registry: reg, Listener: ln, LoginLinks: links})
	})
	if opts.Started != nil {
		opts.Started(info)
	}
	wg.Wait()
	log.Info("caravan stopped")
	return errors.Join(errs...)
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

func startEmbedded(cfg Config) (*natsserver.Server, error) {
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
	ns, err := natsserver.NewServer(&natsserver.Options{
		ServerName: "caravan",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start on %s (is the port taken? set CARAVAN_EMBEDDED_NATS_ADDR)", cfg.EmbeddedNATSAddr)
	}
	return ns, nil
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
