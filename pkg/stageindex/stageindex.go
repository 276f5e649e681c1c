// Package stageindex keeps what every project's stages request in memory,
// so that the promoter finds the stages an event concerns — those that
// request a freight origin, those downstream of a stage, those a
// promotion policy selects — without listing a project's stages from KV.
//
// A Sets is the data structure; an Index keeps one current through a KV
// watch of caravan-resources (pkg/kvindex), resynced from scratch whenever
// the watch ends. Readers that must see every write acknowledged before
// they began call Index.Sync first; when it fails they list the stages
// from KV and describe each with Of, so the index is a fast path, never
// the only one.
//
// An entry is small: a stage's name, labels, requested origins, upstream
// stages and whether it is a control-flow stage, not the whole Stage
// (whoever acts on a stage reads it from KV).
package stageindex

import (
	"slices"
	"strings"
	"sync"
	"unique"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Stage is what the index keeps of a Stage. It is shared and must not be
// modified.
type Stage struct {
	Name string
	// Labels are what promotion policies select stages by, beside the
	// name.
	Labels map[string]string
	// Origins are the origins of spec.requestedFreight, in order.
	Origins []model.FreightOrigin
	// Upstream are the stages of the requests' sources.stages, each once
	// (model.Stage.UpstreamStages).
	Upstream []string
	// ControlFlow: the stage has no promotion steps
	// (model.Stage.IsControlFlow).
	ControlFlow bool
}

// Of describes s for the index.
func Of(s *model.Stage) *Stage {
	out := &Stage{Name: s.Name, ControlFlow: s.IsControlFlow()}
	if len(s.Labels) > 0 {
		out.Labels = make(map[string]string, len(s.Labels))
		for k, v := range s.Labels {
			out.Labels[intern(k)] = intern(v)
		}
	}
	for _, req := range s.Spec.RequestedFreight {
		out.Origins = append(out.Origins, model.FreightOrigin{Kind: model.FreightOriginKind(intern(string(req.Origin.Kind))), Name: intern(req.Origin.Name)})
	}
	for _, up := range s.UpstreamStages() {
		out.Upstream = append(out.Upstream, intern(up))
	}
	return out
}

// Requests reports whether the stage requests freight of origin o
// (model.Stage.RequestsOrigin).
func (s *Stage) Requests(o model.FreightOrigin) bool {
	return slices.Contains(s.Origins, o)
}

// Downstream reports whether stage is one of the stage's upstream stages.
func (s *Stage) Downstream(stage string) bool {
	return slices.Contains(s.Upstream, stage)
}

// Selectable returns a Stage with the name and labels only: what
// promotion policies select stages by (model.AutoPromotionEnabled,
// model.AutoRollbackFor).
func (s *Stage) Selectable() *model.Stage {
	return &model.Stage{ObjectMeta: model.ObjectMeta{Name: s.Name, Labels: s.Labels}}
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Sets holds stages by project, by name, by requested origin and by
// upstream stage. It is safe for concurrent use.
type Sets struct {
	mu       sync.RWMutex
	projects map[string]*project
	// keys names the stage stored under each key of the bucket (a key
	// does not always spell the name: see state.Token).
	keys map[string]stageKey
}

type stageKey struct{ project, name string }

type project struct {
	byName map[string]*Stage
	// byOrigin and byUpstream hold names, sorted.
	byOrigin   map[model.FreightOrigin][]string
	byUpstream map[string][]string
}

// NewSets returns empty sets.
func NewSets() *Sets {
	return &Sets{projects: map[string]*project{}, keys: map[string]stageKey{}}
}

// Put adds s to project's stages, replacing the stage of the same name.
// s must not be modified afterwards.
func (x *Sets) Put(projectName string, s *Stage) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.put(projectName, s)
}

func (x *Sets) put(projectName string, s *Stage) {
	p := x.projects[projectName]
	if p == nil {
		p = &project{byName: map[string]*Stage{}, byOrigin: map[model.FreightOrigin][]string{}, byUpstream: map[string][]string{}}
		x.projects[projectName] = p
	}
	if old := p.byName[s.Name]; old != nil {
		p.remove(old)
	}
	p.byName[s.Name] = s
	for _, o := range s.Origins {
		p.byOrigin[o] = add(p.byOrigin[o], s.Name)
	}
	for _, up := range s.Upstream {
		p.byUpstream[up] = add(p.byUpstream[up], s.Name)
	}
}

// Delete removes the stage name from project's.
func (x *Sets) Delete(projectName, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.delete(projectName, name)
}

func (x *Sets) delete(projectName, name string) {
	p := x.projects[projectName]
	if p == nil {
		return
	}
	if old := p.byName[name]; old != nil {
		p.remove(old)
		delete(p.byName, name)
	}
	if len(p.byName) == 0 {
		delete(x.projects, projectName)
	}
}

func (p *project) remove(s *Stage) {
	for _, o := range s.Origins {
		if l := drop(p.byOrigin[o], s.Name); len(l) > 0 {
			p.byOrigin[o] = l
		} else {
			delete(p.byOrigin, o)
		}
	}
	for _, up := range s.Upstream {
		if l := drop(p.byUpstream[up], s.Name); len(l) > 0 {
			p.byUpstream[up] = l
		} else {
			delete(p.byUpstream, up)
		}
	}
}

func add(names []string, name string) []string {
	i, found := slices.BinarySearch(names, name)
	if found {
		return names
	}
	return slices.Insert(names, i, name)
}

func drop(names []string, name string) []string {
	i, found := slices.BinarySearch(names, name)
	if !found {
		return names
	}
	return slices.Delete(names, i, i+1)
}

// Requesting returns the names of project's stages that request freight
// of origin o, sorted.
func (x *Sets) Requesting(projectName string, o model.FreightOrigin) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p := x.projects[projectName]; p != nil {
		return slices.Clone(p.byOrigin[o])
	}
	return nil
}

// Downstream returns the names of project's stages that have stage among
// their upstream stages, sorted.
func (x *Sets) Downstream(projectName, stage string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p := x.projects[projectName]; p != nil {
		return slices.Clone(p.byUpstream[stage])
	}
	return nil
}

// Stages returns project's stages, sorted by name. They are shared and
// must not be modified.
func (x *Sets) Stages(projectName string) []*Stage {
	x.mu.RLock()
	defer x.mu.RUnlock()
	p := x.projects[projectName]
	if p == nil {
		return nil
	}
	out := make([]*Stage, 0, len(p.byName))
	for _, s := range p.byName {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *Stage) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Get returns project's stage named name.
func (x *Sets) Get(projectName, name string) (*Stage, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p := x.projects[projectName]; p != nil {
		s, ok := p.byName[name]
		return s, ok
	}
	return nil, false
}

// Projects returns the projects that have stages, sorted.
func (x *Sets) Projects() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]string, 0, len(x.projects))
	for p := range x.projects {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// putKey records s, stored under key, in project's stages.
func (x *Sets) putKey(key, projectName string, s *Stage) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.keys[key]; ok && old != (stageKey{projectName, s.Name}) {
		x.delete(old.project, old.name)
	}
	x.keys[key] = stageKey{projectName, s.Name}
	x.put(projectName, s)
}

// deleteKey removes the stage stored under key.
func (x *Sets) deleteKey(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.keys[key]; ok {
		delete(x.keys, key)
		x.delete(old.project, old.name)
	}
}
