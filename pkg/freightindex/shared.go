package freightindex

import (
	"encoding/json"
	"strconv"
	"sync"
	"unique"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Shared lets the indexes of one freight bucket that run in one process
// (caravan server's gateway and promoter) hold each freight once instead
// of once per index: the first index to decode a key at a revision keeps
// the object here and the others take the same object. It holds the
// latest revision of each key only, so it is as large as the bucket's
// keys, not its objects (those the indexes hold anyway).
//
// Only freight every index decodes alike is shared: a Freight (apiVersion
// and kind set) with a name and a namespace. Anything else is left to each
// index's own decoding, so sharing changes nothing an index holds. The
// freight handed out is shared and must not be modified. A nil *Shared
// shares nothing. It is safe for concurrent use.
type Shared struct {
	mu    sync.Mutex
	byKey map[string]sharedFreight
}

type sharedFreight struct {
	rev uint64
	f   *model.Freight
}

// NewShared returns an empty cache.
func NewShared() *Shared {
	return &Shared{byKey: map[string]sharedFreight{}}
}

// Get returns the freight stored under key at revision rev (value: its
// JSON), decoding it the first time, with ResourceVersion set to rev; or
// nil when value is not freight every index decodes alike (the caller
// then decodes it itself).
func (s *Shared) Get(key string, rev uint64, value []byte) *model.Freight {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	e, ok := s.byKey[key]
	s.mu.Unlock()
	if ok && e.rev == rev {
		return e.f
	}
	f := decodeShareable(value)
	if f == nil {
		return nil
	}
	f.ResourceVersion = strconv.FormatUint(rev, 10)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byKey[key]; ok && e.rev >= rev {
		if e.rev == rev {
			return e.f // decoded meanwhile by another index
		}
		return f // a newer revision is cached: this one is not kept
	}
	s.byKey[key] = sharedFreight{rev: rev, f: f}
	return f
}

// Forget drops key, deleted at revision rev, from the cache.
func (s *Shared) Forget(key string, rev uint64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byKey[key]; ok && e.rev < rev {
		delete(s.byKey, key)
	}
}

// decodeShareable decodes value as every index would (model's
// DecodeJSONObject and a plain json.Unmarshal agree on it): nil unless it
// is a Freight with a name and a namespace.
func decodeShareable(value []byte) *model.Freight {
	f := &model.Freight{}
	if err := json.Unmarshal(value, f); err != nil {
		return nil
	}
	if f.APIVersion != model.APIVersionOf(model.KindFreight) || f.Kind != model.KindFreight || f.Name == "" || f.Namespace == "" {
		return nil
	}
	Compact(f)
	return f
}

// Compact makes f's strings that repeat across freight (apiVersion, kind,
// namespace, origin, repository URLs, subscription names) share one copy
// per value in the process, so that thousands of freight held in memory
// hold each once. f is unchanged otherwise.
func Compact(f *model.Freight) {
	f.APIVersion = intern(f.APIVersion)
	f.Kind = intern(f.Kind)
	f.Namespace = intern(f.Namespace)
	f.Origin.Kind = model.FreightOriginKind(intern(string(f.Origin.Kind)))
	f.Origin.Name = intern(f.Origin.Name)
	for i := range f.Commits {
		c := &f.Commits[i]
		c.SubscriptionName, c.RepoURL, c.Branch = intern(c.SubscriptionName), intern(c.RepoURL), intern(c.Branch)
	}
	for i := range f.Images {
		im := &f.Images[i]
		im.SubscriptionName, im.RepoURL = intern(im.SubscriptionName), intern(im.RepoURL)
	}
	for i := range f.Charts {
		c := &f.Charts[i]
		c.SubscriptionName, c.RepoURL, c.Name = intern(c.SubscriptionName), intern(c.RepoURL), intern(c.Name)
	}
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
