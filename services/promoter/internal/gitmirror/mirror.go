// Package gitmirror keeps one bare mirror per Git repository under a
// directory, fetched incrementally, and checks work trees out of it for
// promotions. A work tree keeps its own new objects in memory and reads
// everything else from the mirror, so checking out a repository with a long
// history costs what its tree costs, not what its history does.
package gitmirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Auth is HTTP basic-auth credentials; a nil *Auth is anonymous.
type Auth struct {
	Username string
	Password string
}

func (a *Auth) method() transport.AuthMethod {
	if a == nil {
		return nil
	}
	return &http.BasicAuth{Username: a.Username, Password: a.Password}
}

// Manager owns the mirrors below one directory. It is safe for concurrent
// use.
type Manager struct {
	dir     string
	mu      sync.Mutex
	mirrors map[string]*Mirror
}

// NewManager keeps mirrors in dir (created if needed).
func NewManager(dir string) (*Manager, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("git mirrors dir: %w", err)
	}
	return &Manager{dir: dir, mirrors: map[string]*Mirror{}}, nil
}

// Mirror is the bare mirror of one repository.
type Mirror struct {
	url string
	dir string
	// mu serialises fetches and object reads: go-git's filesystem storage
	// is not safe for concurrent use.
	mu      sync.Mutex
	storage *filesystem.Storage
	repo    *git.Repository
}

// Sync returns url's mirror, fetched from the remote now.
func (m *Manager) Sync(ctx context.Context, url string, auth *Auth) (*Mirror, error) {
	mi, err := m.mirror(url)
	if err != nil {
		return nil, err
	}
	if err := mi.Fetch(ctx, auth); err != nil {
		return nil, err
	}
	return mi, nil
}

func (m *Manager) mirror(url string) (*Mirror, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mi, ok := m.mirrors[url]; ok {
		return mi, nil
	}
	sum := sha256.Sum256([]byte(url))
	dir := filepath.Join(m.dir, hex.EncodeToString(sum[:16]))
	storage := filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRU(64*cache.MiByte), filesystem.Options{KeepDescriptors: false})
	repo, err := git.Open(storage, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create mirror: %w", err)
		}
		repo, err = git.Init(storage, nil)
		if err == nil {
			_, err = repo.CreateRemote(&config.RemoteConfig{
				Name:  "origin",
				URLs:  []string{url},
				Fetch: []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"},
			})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open mirror of %s: %w", url, err)
	}
	mi := &Mirror{url: url, dir: dir, storage: storage, repo: repo}
	m.mirrors[url] = mi
	return mi, nil
}

// Fetch brings the mirror up to date with the remote, pruning branches the
// remote deleted.
func (mi *Mirror) Fetch(ctx context.Context, auth *Auth) error {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	err := mi.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		Auth:       auth.method(),
		Tags:       git.NoTags,
		Force:      true,
		Prune:      true,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return nil
	}
	return fmt.Errorf("fetch %s: %w", mi.url, scrub(err, auth))
}

// Ref returns the hash of a reference of the mirror (zero when absent).
func (mi *Mirror) Ref(name plumbing.ReferenceName) (plumbing.Hash, error) {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	ref, err := mi.storage.Reference(name)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if ref.Type() == plumbing.SymbolicReference {
		return plumbing.ZeroHash, nil
	}
	return ref.Hash(), nil
}

// object reads one object into memory.
func (mi *Mirror) object(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	o, err := mi.storage.EncodedObject(t, h)
	if err != nil {
		return nil, err
	}
	mem := &plumbing.MemoryObject{}
	mem.SetType(o.Type())
	mem.SetSize(o.Size())
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	w, err := mem.Writer()
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, r); err != nil {
		return nil, err
	}
	return mem, w.Close()
}

func (mi *Mirror) has(h plumbing.Hash) error {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	return mi.storage.HasEncodedObject(h)
}

func (mi *Mirror) size(h plumbing.Hash) (int64, error) {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	return mi.storage.EncodedObjectSize(h)
}

// scrub removes the password from an error's text.
func scrub(err error, auth *Auth) error {
	if err == nil || auth == nil || auth.Password == "" {
		return err
	}
	return redacted{err: err, secret: auth.Password}
}
