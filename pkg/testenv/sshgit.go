package testenv

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHGit serves the repositories of a Git server over SSH (an in-process
// golang.org/x/crypto/ssh server running git-upload-pack and
// git-receive-pack), accepting only the authorised public keys.
type SSHGit struct {
	git     *Git
	ln      net.Listener
	hostKey ssh.Signer
	config  *ssh.ServerConfig

	mu         sync.Mutex
	authorized map[string]bool // by marshalled public key
	sessions   atomic.Int64
	wg         sync.WaitGroup
}

// SSHGitServer serves g's repositories over SSH on loopback with a fresh
// ed25519 host key, for clients presenting one of the authorized keys, and
// stops at test cleanup.
func SSHGitServer(t testing.TB, g *Git, authorized ...ssh.PublicKey) *SSHGit {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("testenv: ssh host key: %v", err)
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatalf("testenv: ssh host key: %v", err)
	}
	s := &SSHGit{git: g, hostKey: hostKey, authorized: map[string]bool{}}
	for _, k := range authorized {
		s.authorized[string(k.Marshal())] = true
	}
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.authorized[string(key.Marshal())] {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("unknown public key")
		},
	}
	s.config.AddHostKey(hostKey)
	s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: ssh listen: %v", err)
	}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		_ = s.ln.Close()
		s.wg.Wait()
	})
	return s
}

// NewSSHKey returns a new ed25519 key: its OpenSSH PEM private key and its
// public key.
func NewSSHKey(t testing.TB) (pemKey []byte, pub ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("testenv: ssh key: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatalf("testenv: ssh key: %v", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatalf("testenv: ssh key: %v", err)
	}
	var buf bytes.Buffer
	if err := pemEncode(&buf, block.Type, block.Bytes); err != nil {
		t.Fatalf("testenv: ssh key: %v", err)
	}
	return buf.Bytes(), signer.PublicKey()
}

// URL is the ssh:// clone URL of repo, e.g. ssh://git@127.0.0.1:41234/demo.git.
func (s *SSHGit) URL(repo string) string {
	return "ssh://git@" + s.ln.Addr().String() + "/" + repoDir(repo)
}

// HostKey is the server's public host key.
func (s *SSHGit) HostKey() ssh.PublicKey { return s.hostKey.PublicKey() }

// KnownHostsLine is the server's line of a known_hosts file.
func (s *SSHGit) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.ln.Addr().String())}, s.hostKey.PublicKey())
}

// Sessions is the number of git commands run so far.
func (s *SSHGit) Sessions() int { return int(s.sessions.Load()) }

func (s *SSHGit) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *SSHGit) handle(c net.Conn) {
	defer func() { _ = c.Close() }()
	conn, chans, reqs, err := ssh.NewServerConn(c, s.config)
	if err != nil {
		return
	}
	defer func() { _ = conn.Close() }()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.session(ch, requests)
		}()
	}
}

// session runs the one git command an "exec" request names.
func (s *SSHGit) session(ch ssh.Channel, requests <-chan *ssh.Request) {
	defer func() { _ = ch.Close() }()
	for req := range requests {
		if req.Type == "env" {
			_ = req.Reply(true, nil)
			continue
		}
		if req.Type != "exec" {
			_ = req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		cmd, dir, err := s.command(payload.Command)
		if err != nil {
			_ = req.Reply(true, nil)
			fmt.Fprintf(ch.Stderr(), "%v\n", err)
			sendExit(ch, 128)
			return
		}
		_ = req.Reply(true, nil)
		s.sessions.Add(1)
		c := exec.Command(gitBinary, cmd, dir)
		c.Env = GitEnv(s.git.home)
		c.Stdin, c.Stdout, c.Stderr = ch, ch, ch.Stderr()
		code := 0
		if err := c.Run(); err != nil {
			code = 1
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
		}
		_ = ch.CloseWrite()
		sendExit(ch, code)
		return
	}
}

// command parses "git-upload-pack '/repo.git'" into the git subcommand and
// the repository's directory below the root.
func (s *SSHGit) command(line string) (sub, dir string, err error) {
	name, arg, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok || (name != "git-upload-pack" && name != "git-receive-pack") {
		return "", "", fmt.Errorf("unsupported command %q", line)
	}
	repo := strings.Trim(strings.TrimSpace(arg), "'\"")
	repo = strings.Trim(filepath.Clean("/"+repo), "/")
	if repo == "" || strings.Contains(repo, "..") {
		return "", "", fmt.Errorf("bad repository %q", arg)
	}
	return strings.TrimPrefix(name, "git-"), filepath.Join(s.git.root, repo), nil
}

func sendExit(ch ssh.Channel, code int) {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(code))
	_, _ = ch.SendRequest("exit-status", false, b)
}

func pemEncode(w io.Writer, typ string, b []byte) error {
	return pem.Encode(w, &pem.Block{Type: typ, Bytes: b})
}
