// Package gitmirror keeps one bare mirror per project, repository and
// credentials under a directory, fetched incrementally, and checks work
// trees out of it for promotions.
//
// Promotions into one repository run in parallel: objects are read through
// a store that needs no lock (only fetches are serialised, and concurrent
// fetches of one mirror share one), every work tree keeps its new objects in
// memory, and pushes to one branch go through one queue that replays each
// promotion's commits onto the branch's tip with a three-way merge and sends
// them in one push. Mirrors are bounded by a byte budget on disk and their
// decoded objects by a shared byte budget in memory, least recently used
// first out.
package gitmirror

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/caravan-cd/caravan/pkg/creds"
)

// Auth is a repository's credentials (HTTP basic auth, or an SSH key for
// ssh URLs); a nil *Auth is anonymous.
type Auth = creds.Credentials

// Defaults of Options.
const (
	DefaultMaxBytes      int64 = 10 << 30
	DefaultCacheMaxBytes int64 = 32 << 20
)

// Options bound a Manager.
type Options struct {
	// MaxBytes is the disk budget of all mirrors: beyond it the least
	// recently used mirrors no promotion is using are deleted (and fetched
	// again when next needed). DefaultMaxBytes when 0.
	MaxBytes int64
	// CacheMaxBytes is the memory budget of decoded objects, shared by all
	// mirrors. DefaultCacheMaxBytes when 0.
	CacheMaxBytes int64
	// Logger is where mirrors report upkeep that failed without failing
	// the caller (default: nowhere).
	Logger *slog.Logger
}

// Manager owns the mirrors below one directory. It is safe for concurrent
// use.
type Manager struct {
	dir   string
	salt  []byte
	max   int64
	cache *objectCache
	ids   atomic.Uint64
	log   *slog.Logger
	// maxPacks and maxLoose are when a fetch compacts a mirror (compact.go;
	// tests lower them).
	maxPacks, maxLoose int

	mu      sync.Mutex
	mirrors map[string]*Mirror // by directory name
	// cold are mirrors found on disk at start and not opened since.
	cold map[string]coldMirror
}

type coldMirror struct {
	size int64
	used time.Time
}

// NewManager keeps mirrors in dir (created if needed). Mirrors a previous
// process left there are reused and count against the budget.
func NewManager(dir string, o Options) (*Manager, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.CacheMaxBytes <= 0 {
		o.CacheMaxBytes = DefaultCacheMaxBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("git mirrors dir: %w", err)
	}
	salt, err := loadSalt(filepath.Join(dir, "salt"))
	if err != nil {
		return nil, err
	}
	m := &Manager{dir: dir, salt: salt, max: o.MaxBytes, cache: newObjectCache(o.CacheMaxBytes), log: o.Logger, maxPacks: maxPacks, maxLoose: maxLoose, mirrors: map[string]*Mirror{}, cold: map[string]coldMirror{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("git mirrors dir: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		size, used := dirUsage(filepath.Join(dir, e.Name()))
		m.cold[e.Name()] = coldMirror{size: size, used: used}
	}
	m.mu.Lock()
	victims := m.victims()
	m.mu.Unlock()
	m.remove(victims)
	return m, nil
}

// loadSalt reads (or creates) the random salt of mirror directory names:
// a name says nothing about the credentials it was fetched with.
func loadSalt(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read mirror salt: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write mirror salt: %w", err)
	}
	return b, nil
}

// key names the mirror of a project's repository fetched with auth: one
// project's mirror never serves another's checkout, and credentials that
// differ never share a mirror.
func (m *Manager) key(project, url string, auth *Auth) string {
	h := sha256.New()
	h.Write(m.salt)
	for _, s := range []string{project, url} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	if k := auth.Key(); k != "" {
		// The credentials' identity: an exchanged token that is renewed
		// keeps its mirror.
		fmt.Fprintf(h, "auth%d:%s", len(k), k)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Sync returns the project's mirror of url for auth, fetched from the
// remote after the call began (concurrent calls share one fetch).
func (m *Manager) Sync(ctx context.Context, project, url string, auth *Auth) (*Mirror, error) {
	mi, err := m.mirror(project, url, auth)
	if err != nil {
		return nil, err
	}
	defer mi.release()
	if err := mi.Fetch(ctx); err != nil {
		return nil, err
	}
	m.evict()
	return mi, nil
}

// mirror opens (or creates) a mirror and holds it until release.
func (m *Manager) mirror(project, url string, auth *Auth) (*Mirror, error) {
	name := m.key(project, url, auth)
	m.mu.Lock()
	defer m.mu.Unlock()
	if mi, ok := m.mirrors[name]; ok {
		mi.acquire()
		return mi, nil
	}
	delete(m.cold, name)
	dir := filepath.Join(m.dir, name)
	mi, err := openMirror(dir, url, auth, mirrorCache{c: m.cache, id: m.ids.Add(1)})
	if err != nil {
		return nil, err
	}
	mi.manager, mi.project = m, project
	mi.acquire()
	m.mirrors[name] = mi
	return mi, nil
}

// Bytes is the disk size of the mirrors, as last measured.
func (m *Manager) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, mi := range m.mirrors {
		n += mi.size.Load()
	}
	for _, c := range m.cold {
		n += c.size
	}
	return n
}

// CacheBytes is the size of the decoded objects held in memory.
func (m *Manager) CacheBytes() int64 { return m.cache.bytes() }

// evict deletes the least recently used idle mirrors while the mirrors
// exceed the budget.
func (m *Manager) evict() {
	m.mu.Lock()
	victims := m.victims()
	m.mu.Unlock()
	m.remove(victims)
}

// victims picks what to delete and forgets it (m.mu held).
func (m *Manager) victims() []string {
	type candidate struct {
		name string
		size int64
		used time.Time
		mi   *Mirror
	}
	var total int64
	var all []candidate
	for name, mi := range m.mirrors {
		size := mi.size.Load()
		total += size
		all = append(all, candidate{name: name, size: size, used: mi.lastUsed(), mi: mi})
	}
	for name, c := range m.cold {
		total += c.size
		all = append(all, candidate{name: name, size: c.size, used: c.used})
	}
	if total <= m.max {
		return nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	var out []string
	for _, c := range all {
		if total <= m.max {
			break
		}
		if c.mi != nil && !c.mi.retire() {
			continue // in use
		}
		delete(m.mirrors, c.name)
		delete(m.cold, c.name)
		if c.mi != nil {
			c.mi.store.close()
			m.cache.purge(c.mi.store.cache.id)
		}
		total -= c.size
		out = append(out, c.name)
	}
	return out
}

func (m *Manager) remove(names []string) {
	for _, name := range names {
		_ = os.RemoveAll(filepath.Join(m.dir, name))
	}
}

// dirUsage is the size of the files below dir and the latest modification.
func dirUsage(dir string) (int64, time.Time) {
	var size int64
	var latest time.Time
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, walkErr error) error {
		if walkErr == nil { // what cannot be read is not counted
			if info, err := d.Info(); err == nil {
				if !d.IsDir() {
					size += info.Size()
				}
				if info.ModTime().After(latest) {
					latest = info.ModTime()
				}
			}
		}
		return nil
	})
	return size, latest
}

// Mirror is the bare mirror of one repository for one project and
// credentials.
type Mirror struct {
	url   string
	dir   string
	auth  *Auth
	store *objectStore
	// manager and project are where the mirror belongs: its submodules'
	// mirrors are the project's too.
	manager *Manager
	project string

	// fetchMu serialises fetches; repo (go-git's filesystem storage) is
	// used only under it.
	fetchMu  sync.Mutex
	repo     *git.Repository
	started  atomic.Uint64 // fetches started
	lastDone uint64        // the start number of the last fetch that ended (fetchMu)
	lastErr  error         // its error (fetchMu)
	// deferred are pushes to record (see advance) that came while a
	// fetch held fetchMu; that fetch records them when it ends.
	deferredMu sync.Mutex
	deferred   []pushed

	refs atomic.Pointer[map[plumbing.ReferenceName]plumbing.Hash]
	// size is the mirror's disk size: measured after a fetch that brought
	// something (and at least every remeasureEvery), with what a push
	// wrote since added.
	size     atomic.Int64
	measured time.Time // when size was last measured (fetchMu)
	// loose counts the loose objects (what record wrote) since the last
	// compaction (fetchMu).
	loose int
	// pushCaps are the server's receive-pack capabilities, from the last
	// advertisement.
	pushCaps atomic.Pointer[capability.List]

	// users counts the holders (a Sync in progress, work trees); a mirror
	// in use is never deleted. retired is set once it is.
	useMu   sync.Mutex
	users   int
	used    time.Time
	retired bool

	branchMu sync.Mutex
	branches map[string]*branchQueue
}

func openMirror(dir, url string, auth *Auth, c mirrorCache) (*Mirror, error) {
	storage := filesystem.NewStorageWithOptions(osfs.New(dir), c, filesystem.Options{})
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
	mi := &Mirror{url: url, dir: dir, auth: auth, store: newObjectStore(dir, c), repo: repo, used: time.Now(), branches: map[string]*branchQueue{}}
	if _, err := mi.refresh(); err != nil {
		return nil, err
	}
	if los, ok := repo.Storer.(storer.LooseObjectStorer); ok {
		_ = los.ForEachObjectHash(func(plumbing.Hash) error { mi.loose++; return nil })
	}
	return mi, nil
}

func (mi *Mirror) acquire() {
	mi.useMu.Lock()
	mi.users++
	mi.used = time.Now()
	mi.useMu.Unlock()
}

func (mi *Mirror) release() {
	mi.useMu.Lock()
	mi.users--
	mi.used = time.Now()
	mi.useMu.Unlock()
}

func (mi *Mirror) lastUsed() time.Time {
	mi.useMu.Lock()
	defer mi.useMu.Unlock()
	return mi.used
}

// retire marks an idle mirror deleted; it reports false if it is in use.
func (mi *Mirror) retire() bool {
	mi.useMu.Lock()
	defer mi.useMu.Unlock()
	if mi.users > 0 {
		return false
	}
	mi.retired = true
	return true
}

// Fetch brings the mirror up to date with the remote, pruning branches the
// remote deleted. A call that finds a fetch running waits for it and then
// shares the next one: every caller gets a fetch that started after it
// called.
func (mi *Mirror) Fetch(ctx context.Context) error {
	after := mi.started.Load()
	mi.fetchMu.Lock()
	defer mi.fetchMu.Unlock()
	if mi.lastDone > after {
		return mi.lastErr
	}
	n := mi.started.Add(1)
	err := mi.fetch(ctx)
	if ctx.Err() == nil {
		// A fetch cut short by its caller's ctx is no answer for others.
		mi.lastDone, mi.lastErr = n, err
	}
	mi.recordDeferred()
	if err := mi.compact(); err != nil {
		// Not the fetch's failure: the mirror reads as before, and the
		// next fetch tries again.
		mi.manager.log.Warn("git mirror compaction failed", "repo", mi.url, "err", err)
	}
	return err
}

func (mi *Mirror) fetch(ctx context.Context) error {
	auth, err := creds.GitAuth(mi.auth, mi.url)
	if err != nil {
		return err
	}
	err = mi.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		Auth:       auth,
		Tags:       git.NoTags,
		Force:      true,
		Prune:      true,
	})
	upToDate := errors.Is(err, git.NoErrAlreadyUpToDate)
	switch {
	case err == nil, upToDate, errors.Is(err, transport.ErrEmptyRemoteRepository):
	default:
		return fmt.Errorf("fetch %s: %w", mi.url, scrub(err, mi.auth))
	}
	added, err := mi.refresh()
	if err != nil {
		return err
	}
	// Walking the mirror's files costs milliseconds on a busy one (every
	// fetch that brought something adds a pack): between walks, what a
	// fetch brought is added.
	if time.Since(mi.measured) >= remeasureEvery {
		size, _ := dirUsage(mi.dir)
		mi.size.Store(size)
		mi.measured = time.Now()
	} else if !upToDate {
		mi.size.Add(added)
	}
	return nil
}

// remeasureEvery bounds how long a mirror's measured size may go without
// a walk of its files.
const remeasureEvery = time.Minute

// refresh publishes the packs and references on disk (fetchMu held, or
// before the mirror is shared); it returns the disk size of the packs it
// found new.
func (mi *Mirror) refresh() (int64, error) {
	added, err := mi.store.reload()
	if err != nil {
		return 0, err
	}
	refs := map[plumbing.ReferenceName]plumbing.Hash{}
	iter, err := mi.repo.Storer.IterReferences()
	if err != nil {
		return 0, fmt.Errorf("read mirror references: %w", err)
	}
	err = iter.ForEach(func(r *plumbing.Reference) error {
		if r.Type() == plumbing.HashReference {
			refs[r.Name()] = r.Hash()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read mirror references: %w", err)
	}
	mi.refs.Store(&refs)
	return added, nil
}

// pushed is a push the remote accepted: ref moved from base to commit,
// with objs.
type pushed struct {
	ref          plumbing.ReferenceName
	base, commit plumbing.Hash
	objs         []plumbing.EncodedObject
}

// advance records a push the remote accepted: the pushed objects are
// written to the mirror and ref moves from base to commit, so that the
// next fetch downloads nothing. When a fetch moved ref since base it is
// left as that fetch found it. While a fetch runs the push is left for
// that fetch to record when it ends (the push's caller does not wait).
func (mi *Mirror) advance(ref plumbing.ReferenceName, base, commit plumbing.Hash, objs []plumbing.EncodedObject) error {
	p := pushed{ref: ref, base: base, commit: commit, objs: objs}
	if !mi.fetchMu.TryLock() {
		mi.deferredMu.Lock()
		mi.deferred = append(mi.deferred, p)
		mi.deferredMu.Unlock()
		return nil
	}
	defer mi.fetchMu.Unlock()
	return mi.record(p)
}

// recordDeferred records the pushes deferred while a fetch ran (fetchMu
// held). Not fatal: a push not recorded is downloaded by the next fetch.
func (mi *Mirror) recordDeferred() {
	mi.deferredMu.Lock()
	ps := mi.deferred
	mi.deferred = nil
	mi.deferredMu.Unlock()
	for _, p := range ps {
		_ = mi.record(p)
	}
}

// record writes a push to the mirror (fetchMu held).
func (mi *Mirror) record(p pushed) error {
	ref, base, commit, objs := p.ref, p.base, p.commit, p.objs
	if mi.Ref(ref) != base {
		return nil
	}
	var written int64
	for _, o := range objs {
		if _, err := mi.repo.Storer.SetEncodedObject(o); err != nil {
			return fmt.Errorf("write pushed object %s: %w", o.Hash(), err)
		}
		written += o.Size() // at most what the compressed file takes
	}
	mi.loose += len(objs)
	mi.size.Add(written)
	if err := mi.repo.Storer.SetReference(plumbing.NewHashReference(ref, commit)); err != nil {
		return fmt.Errorf("move %s to the pushed %s: %w", ref, commit, err)
	}
	_, err := mi.refresh()
	return err
}

// Ref returns the hash of a reference of the mirror (zero when absent).
func (mi *Mirror) Ref(name plumbing.ReferenceName) plumbing.Hash {
	return (*mi.refs.Load())[name]
}

// scrub removes the password from an error's text.
func scrub(err error, auth *Auth) error {
	if err == nil || auth == nil || auth.Password == "" {
		return err
	}
	return redacted{err: err, secret: auth.Password}
}

// redacted hides a secret in an error's text.
type redacted struct {
	err    error
	secret string
}

func (e redacted) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.secret, "***")
}

func (e redacted) Unwrap() error { return e.err }
