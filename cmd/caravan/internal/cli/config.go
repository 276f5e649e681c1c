package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
	"github.com/caravan-cd/caravan/pkg/buildinfo"
)

// DefaultServer is the API a local `caravan server` serves.
const DefaultServer = "http://127.0.0.1:8080"

// config is what `caravan login` saves.
type config struct {
	Server  string `yaml:"server,omitempty"`
	Token   string `yaml:"token,omitempty"`
	Project string `yaml:"project,omitempty"`
}

// configFile is where the config lives: --config, $CARAVAN_CONFIG, or
// <user config dir>/caravan/config.yaml.
func (a *app) configFile() (string, error) {
	if a.configPath != "" {
		return a.configPath, nil
	}
	if p := a.getenv("CARAVAN_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config dir: %w (set CARAVAN_CONFIG)", err)
	}
	return filepath.Join(dir, "caravan", "config.yaml"), nil
}

// loadConfig reads the config; a missing file is an empty config.
func (a *app) loadConfig() (config, error) {
	var c config
	path, err := a.configFile()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// saveConfig writes the config with mode 0600 (its directory 0700).
func (a *app) saveConfig(c config) (string, error) {
	path, err := a.configFile()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create config dir: %w", err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Chmod(0o600), tmp.Close()); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// target is the resolved server, token and project.
type target struct {
	server  string
	token   string
	project string
	// tokenFrom says where the token came from, for error messages.
	tokenFrom string
	// looked says, when no token was found, where the CLI looked.
	looked []string
}

// resolve picks the server, token and project: flags first, then
// CARAVAN_SERVER / CARAVAN_TOKEN / CARAVAN_PROJECT, then the login config,
// then (for a server on this machine) the admin token a local
// `caravan server` generated.
func (a *app) resolve() (target, error) {
	c, err := a.loadConfig()
	if err != nil {
		return target{}, err
	}
	t := target{
		server:  firstOf(a.server, a.getenv("CARAVAN_SERVER"), c.Server, DefaultServer),
		project: firstOf(a.project, a.getenv("CARAVAN_PROJECT"), c.Project),
	}
	switch {
	case a.token != "":
		t.token, t.tokenFrom = a.token, "--token"
	case a.getenv("CARAVAN_TOKEN") != "":
		t.token, t.tokenFrom = a.getenv("CARAVAN_TOKEN"), "CARAVAN_TOKEN"
	case c.Token != "" && (c.Server == "" || sameServer(c.Server, t.server)):
		t.token, t.tokenFrom = c.Token, "the login config"
	case isLocal(t.server):
		path := a.localTokenFile()
		if b, err := os.ReadFile(path); err == nil {
			t.token, t.tokenFrom = strings.TrimSpace(string(b)), path
		}
	}
	if t.token == "" {
		t.looked = a.lookedFor(c, t.server)
	}
	return t, nil
}

// lookedFor lists where resolve looked for a token, and why each place
// gave none.
func (a *app) lookedFor(c config, server string) []string {
	looked := []string{"--token and $CARAVAN_TOKEN: not set"}
	path, err := a.configFile()
	switch {
	case err != nil:
		looked = append(looked, fmt.Sprintf("the login config: %v", err))
	case c.Token != "":
		looked = append(looked, fmt.Sprintf("%s: its token is for %s, not %s", path, c.Server, server))
	default:
		if _, err := os.Stat(path); err != nil {
			looked = append(looked, path+": not there (caravan login writes it)")
		} else {
			looked = append(looked, path+": no token in it")
		}
	}
	local := a.localTokenFile()
	if abs, err := filepath.Abs(local); err == nil {
		local = abs
	}
	if isLocal(server) {
		looked = append(looked, local+": not there (a local 'caravan server' writes its admin token to <data dir>/admin-token; set CARAVAN_DATA_DIR when it runs from another directory)")
	} else {
		looked = append(looked, "the admin token of a local server: not used for "+server)
	}
	return looked
}

// noTokenError says where the CLI looked for a token and how to log in.
func (a *app) noTokenError(t target) error {
	var b strings.Builder
	fmt.Fprintf(&b, "no API token for %s. Looked at:\n", t.server)
	for _, l := range t.looked {
		fmt.Fprintf(&b, "  - %s\n", l)
	}
	if found := a.findAdminToken(); found != "" && isLocal(t.server) {
		fmt.Fprintf(&b, "A local server's admin token is in %s; log in with it:\n  caravan login --server %s --token \"$(cat %s)\"", found, t.server, found)
		return errors.New(b.String())
	}
	fmt.Fprintf(&b, "Log in with:\n  caravan login --server %s --token <TOKEN>", t.server)
	if isLocal(t.server) {
		fmt.Fprintf(&b, "\nFor the 'caravan server' (make run) in directory D, its admin token:\n  caravan login --server %s --token \"$(cat D/.caravan/admin-token)\"", t.server)
	}
	return errors.New(b.String())
}

// findAdminToken looks for .caravan/admin-token in the parent directories
// of the working directory (a newcomer in a folder of the repository).
func (a *app) findAdminToken() string {
	if a.getenv("CARAVAN_DATA_DIR") != "" {
		return ""
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
		path := filepath.Join(dir, ".caravan", "admin-token")
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
}

// localTokenFile is the admin token a local `caravan server` writes.
func (a *app) localTokenFile() string {
	dir := firstOf(a.getenv("CARAVAN_DATA_DIR"), ".caravan")
	return filepath.Join(dir, "admin-token")
}

// client returns an API client for the resolved target; without a token
// it says where it looked and how to log in.
func (a *app) client() (*client.Client, target, error) {
	c, t, err := a.anonymousClient()
	if err == nil && t.token == "" {
		return nil, t, a.noTokenError(t)
	}
	return c, t, err
}

// anonymousClient is client for the resolved target, token or not (login
// checks it itself; version reads the public /version).
func (a *app) anonymousClient() (*client.Client, target, error) {
	t, err := a.resolve()
	if err != nil {
		return nil, t, err
	}
	c, err := client.New(t.server, t.token, client.WithUserAgent("caravan-cli/"+buildinfo.Read().Version))
	if err != nil {
		return nil, t, usageError{err}
	}
	return c, t, nil
}

// projectClient is client for verbs that need a project.
func (a *app) projectClient() (*client.Client, string, error) {
	c, t, err := a.client()
	if err != nil {
		return nil, "", err
	}
	if t.project == "" {
		return nil, "", usagef("no project: pass -p/--project, set CARAVAN_PROJECT, or run 'caravan login --project P'")
	}
	return c, t.project, nil
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func sameServer(a, b string) bool {
	return strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}

// isLocal reports whether the server URL points at this machine.
func isLocal(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
