package creds

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// KnownHostsSetting names the setting of the known hosts file in errors.
const KnownHostsSetting = "CARAVAN_SSH_KNOWN_HOSTS"

// ErrUnknownHost is returned (wrapped) for an SSH server whose host key is
// not in the known hosts, and for one whose key differs from them.
var ErrUnknownHost = errors.New("ssh host key not known")

// KnownHosts checks SSH host keys against the known_hosts files at paths
// (OpenSSH's format, hashed names included). With no path, every host is
// refused: Caravan never trusts a host key on first use.
func KnownHosts(paths ...string) (ssh.HostKeyCallback, error) {
	var files []string
	for _, p := range paths {
		if p = strings.TrimSpace(p); p != "" {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		return func(hostname string, _ net.Addr, _ ssh.PublicKey) error {
			return fmt.Errorf("%w: %s: no known hosts configured (set %s to a known_hosts file)", ErrUnknownHost, hostname, KnownHostsSetting)
		}, nil
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%s: %w", KnownHostsSetting, err)
		}
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KnownHostsSetting, err)
	}
	where := strings.Join(files, ", ")
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("%w: %s (%s key %s) is not in the known hosts (%s): add it there", ErrUnknownHost, hostname, key.Type(), ssh.FingerprintSHA256(key), where)
		case errors.As(err, &ke):
			return fmt.Errorf("%w: %s presented %s key %s, which differs from the known hosts (%s): refusing (the host key changed, or someone is in between)", ErrUnknownHost, hostname, key.Type(), ssh.FingerprintSHA256(key), where)
		}
		return fmt.Errorf("check host key of %s: %w", hostname, err)
	}, nil
}

// IsSSHURL reports whether a git repository URL is reached over SSH
// (ssh:// or scp-like user@host:path).
func IsSSHURL(repoURL string) bool {
	ep, err := transport.NewEndpoint(strings.TrimSpace(repoURL))
	return err == nil && ep.Protocol == "ssh"
}

// GitAuth is the go-git authentication of c for repoURL: an SSH public key
// for ssh URLs (user from the URL, else the Secret's username, else
// "git"), HTTP basic auth otherwise; nil for nil credentials. An SSH key
// for an http(s) URL, or a password for an ssh URL, is an error naming the
// Secret.
func GitAuth(c *Credentials, repoURL string) (transport.AuthMethod, error) {
	if c == nil {
		return nil, nil
	}
	overSSH := IsSSHURL(repoURL)
	if len(c.SSHPrivateKey) == 0 {
		if overSSH {
			return nil, fmt.Errorf("secret %s: %s is an SSH URL: the Secret needs %s", c.Secret, repoURL, KeySSHPrivateKey)
		}
		user := c.Username
		if user == "" {
			user = "git" // a token alone: any user name will do
		}
		return &githttp.BasicAuth{Username: user, Password: c.Password}, nil
	}
	if !overSSH {
		return nil, fmt.Errorf("secret %s: %s is no SSH URL, and %s is for SSH URLs only (ssh://… or git@host:path)", c.Secret, repoURL, KeySSHPrivateKey)
	}
	user := c.Username
	if ep, err := transport.NewEndpoint(strings.TrimSpace(repoURL)); err == nil && ep.User != "" {
		user = ep.User
	}
	if user == "" {
		user = "git"
	}
	signer, err := ssh.ParsePrivateKey(c.SSHPrivateKey)
	if err != nil {
		return nil, fmt.Errorf("secret %s: field %s: %w", c.Secret, KeySSHPrivateKey, err)
	}
	cb := c.HostKeyCallback
	if cb == nil {
		cb, _ = KnownHosts()
	}
	return &gitssh.PublicKeys{User: user, Signer: signer, HostKeyCallbackHelper: gitssh.HostKeyCallbackHelper{HostKeyCallback: cb}}, nil
}
