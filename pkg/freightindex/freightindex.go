// Package freightindex keeps every project's freight in memory, ordered
// newest first and indexed by origin and by stage (verified in, approved
// for, currently in), and by alias, so that auto-promotion, the hold
// check of hand-made promotions, alias lookups and list queries read the
// few freight that matter instead of scanning a project's freight in KV.
//
// A Sets is the data structure; an Index keeps one current through a KV
// watch of caravan-freight (pkg/kvindex), resynced from scratch whenever
// the watch ends. Readers that must see every write acknowledged before
// they began call Index.Sync first; when it fails (the watch lags or is
// being resynced) they fall back to reading KV, so the index is a fast
// path, never the only one.
//
// The freight the index hands out is shared and must not be modified: an
// update replaces an entry by a new object, it never changes one.
package freightindex

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Relation selects one list of an origin's freight.
type Relation int

// The lists kept for every origin.
const (
	// All is every freight of the origin.
	All Relation = iota
	// VerifiedIn is the freight verified in a stage.
	VerifiedIn
	// ApprovedFor is the freight approved for a stage.
	ApprovedFor
	// CurrentlyIn is the freight a stage uses now.
	CurrentlyIn
)

// Sets holds freight by project, by name, and by origin in lists ordered
// newest first (model.Newer). It is safe for concurrent use.
type Sets struct {
	mu       sync.RWMutex
	projects map[string]*project
}

type project struct {
	byName   map[string]*model.Freight
	byOrigin map[model.FreightOrigin]*origin
	// byAlias holds the freight of each alias in use (one, unless
	// freight was stored with an alias already taken).
	byAlias map[string][]*model.Freight
}

type origin struct {
	all     []*model.Freight
	byStage [CurrentlyIn + 1]map[string][]*model.Freight // by Relation (All unused)
}

// NewSets returns empty sets.
func NewSets() *Sets {
	return &Sets{projects: map[string]*project{}}
}

// newestFirst orders a before b when a is newer.
func newestFirst(a, b *model.Freight) int {
	switch {
	case a == b || (!model.Newer(a, b) && !model.Newer(b, a)):
		return 0
	case model.Newer(a, b):
		return -1
	}
	return 1
}

func insert(list []*model.Freight, f *model.Freight) []*model.Freight {
	i, found := slices.BinarySearchFunc(list, f, newestFirst)
	if found {
		list[i] = f
		return list
	}
	return slices.Insert(list, i, f)
}

func remove(list []*model.Freight, f *model.Freight) []*model.Freight {
	i, found := slices.BinarySearchFunc(list, f, newestFirst)
	if !found {
		return list
	}
	return slices.Delete(list, i, i+1)
}

// Put adds f to project's freight, replacing the freight of the same name.
// f must not be modified afterwards.
func (s *Sets) Put(projectName string, f *model.Freight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectName]
	if p == nil {
		p = &project{byName: map[string]*model.Freight{}, byOrigin: map[model.FreightOrigin]*origin{}, byAlias: map[string][]*model.Freight{}}
		s.projects[projectName] = p
	}
	if old := p.byName[f.Name]; old != nil {
		p.remove(old)
	}
	p.byName[f.Name] = f
	if f.Alias != "" {
		p.byAlias[f.Alias] = append(p.byAlias[f.Alias], f)
	}
	o := p.byOrigin[f.Origin]
	if o == nil {
		o = &origin{}
		p.byOrigin[f.Origin] = o
	}
	o.all = insert(o.all, f)
	for _, rel := range []Relation{VerifiedIn, ApprovedFor, CurrentlyIn} {
		for _, st := range stagesOf(f, rel) {
			if o.byStage[rel] == nil {
				o.byStage[rel] = map[string][]*model.Freight{}
			}
			o.byStage[rel][st] = insert(o.byStage[rel][st], f)
		}
	}
}

// Delete removes the freight name from project's.
func (s *Sets) Delete(projectName, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectName]
	if p == nil {
		return
	}
	if old := p.byName[name]; old != nil {
		p.remove(old)
		delete(p.byName, name)
	}
	if len(p.byName) == 0 {
		delete(s.projects, projectName)
	}
}

func (p *project) remove(f *model.Freight) {
	if f.Alias != "" {
		if l := slices.DeleteFunc(p.byAlias[f.Alias], func(g *model.Freight) bool { return g == f }); len(l) > 0 {
			p.byAlias[f.Alias] = l
		} else {
			delete(p.byAlias, f.Alias)
		}
	}
	o := p.byOrigin[f.Origin]
	if o == nil {
		return
	}
	o.all = remove(o.all, f)
	for _, rel := range []Relation{VerifiedIn, ApprovedFor, CurrentlyIn} {
		for _, st := range stagesOf(f, rel) {
			if l := remove(o.byStage[rel][st], f); len(l) > 0 {
				o.byStage[rel][st] = l
			} else {
				delete(o.byStage[rel], st)
			}
		}
	}
	if len(o.all) == 0 {
		delete(p.byOrigin, f.Origin)
	}
}

func stagesOf(f *model.Freight, rel Relation) []string {
	var out []string
	switch rel {
	case VerifiedIn:
		for st := range f.Status.VerifiedIn {
			out = append(out, st)
		}
	case ApprovedFor:
		for st := range f.Status.ApprovedFor {
			out = append(out, st)
		}
	case CurrentlyIn:
		for st := range f.Status.CurrentlyIn {
			out = append(out, st)
		}
	}
	return out
}

// Walk calls fn with the freight of project and origin in the list rel
// (of stage, unless rel is All), newest first, until fn returns false. fn
// runs under the sets' read lock: it must not block or call back.
func (s *Sets) Walk(projectName string, o model.FreightOrigin, rel Relation, stage string, fn func(*model.Freight) bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.projects[projectName]
	if p == nil {
		return
	}
	og := p.byOrigin[o]
	if og == nil {
		return
	}
	list := og.all
	if rel != All {
		list = og.byStage[rel][stage]
	}
	for _, f := range list {
		if !fn(f) {
			return
		}
	}
}

// Get returns project's freight named name.
func (s *Sets) Get(projectName, name string) (*model.Freight, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.projects[projectName]
	if p == nil {
		return nil, false
	}
	f, ok := p.byName[name]
	return f, ok
}

// Find returns project's freight whose alias is alias (one of them, if
// several have it), else the names of those whose name starts with
// prefix (when prefix is not "").
func (s *Sets) Find(projectName, alias, prefix string) (byAlias *model.Freight, byPrefix []string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.projects[projectName]
	if p == nil {
		return nil, nil
	}
	if l := p.byAlias[alias]; len(l) > 0 {
		return l[0], nil
	}
	if prefix == "" {
		return nil, nil
	}
	for name := range p.byName {
		if strings.HasPrefix(name, prefix) {
			byPrefix = append(byPrefix, name)
		}
	}
	return nil, byPrefix
}

// Aliased returns the names of project's freight whose alias is alias,
// sorted (at most one, unless freight was stored with an alias already
// taken).
func (s *Sets) Aliased(projectName, alias string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.projects[projectName]
	if p == nil || alias == "" {
		return nil
	}
	var out []string
	for _, f := range p.byAlias[alias] {
		out = append(out, f.Name)
	}
	slices.Sort(out)
	return out
}

// Len returns how many freight project has.
func (s *Sets) Len(projectName string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.projects[projectName]; p != nil {
		return len(p.byName)
	}
	return 0
}

// NewestAvailable returns the newest freight of project and origin
// available to stage at now (model.FreightAvailable), considering only
// freight newer than newerThan when it is not nil; nil when there is none.
// It answers as model.NewestAvailableFreight over all of the project's
// freight would (restricted to freight newer than newerThan), reading only
// the lists such freight can be in — the origin's for a direct request,
// else those approved for the stage and those verified in its upstream
// stages — each newest first and no further than its first available
// freight, or than newerThan.
func (s *Sets) NewestAvailable(projectName string, stage *model.Stage, o model.FreightOrigin, now time.Time, newerThan *model.Freight) *model.Freight {
	var best *model.Freight
	walk := func(rel Relation, st string) {
		s.Walk(projectName, o, rel, st, func(f *model.Freight) bool {
			if newerThan != nil && !model.Newer(f, newerThan) || best != nil && !model.Newer(f, best) {
				return false // older freight cannot be the answer
			}
			if ok, _ := model.FreightAvailable(f, stage, now); ok {
				best = f
				return false
			}
			return true
		})
	}
	for _, req := range stage.Spec.RequestedFreight {
		if req.Origin != o {
			continue
		}
		if req.Sources.Direct {
			walk(All, "")
			break
		}
		walk(ApprovedFor, stage.Name)
		for _, up := range req.Sources.Stages {
			walk(VerifiedIn, up)
		}
		break // the first request of the origin is the one that counts
	}
	return best
}
