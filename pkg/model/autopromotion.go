package model

import (
	"crypto/sha1"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Prefixes of a promotion policy's stage selector name.
const (
	selectorRegexPrefix = "regex:"
	selectorGlobPrefix  = "glob:"
)

// AutoPromotionEnabled reports whether the project's promotion policies let
// stage auto-promote, as Kargo decides it: the first policy naming the
// Stage (stage) or selecting it (stageSelector) decides; no matching policy
// means no auto-promotion.
func AutoPromotionEnabled(policies []PromotionPolicy, stage *Stage) bool {
	for _, p := range policies {
		if policyMatches(p, stage) {
			return p.AutoPromotionEnabled
		}
	}
	return false
}

func policyMatches(p PromotionPolicy, stage *Stage) bool {
	if p.StageSelector != nil {
		return SelectorMatches(p.StageSelector, stage)
	}
	return p.Stage != "" && p.Stage == stage.Name
}

// SelectorMatches reports whether sel selects stage: its name (exact,
// "regex:<expression>" or "glob:<pattern>"; empty matches every name) and
// every label requirement must match. An invalid expression or pattern
// matches nothing.
func SelectorMatches(sel *PromotionPolicySelector, stage *Stage) bool {
	if !nameMatches(sel.Name, stage.Name) {
		return false
	}
	for k, v := range sel.MatchLabels {
		if got, ok := stage.Labels[k]; !ok || got != v {
			return false
		}
	}
	for _, req := range sel.MatchExpressions {
		if !requirementMatches(req, stage.Labels) {
			return false
		}
	}
	return true
}

func nameMatches(pattern, name string) bool {
	switch {
	case pattern == "":
		return true
	case strings.HasPrefix(pattern, selectorRegexPrefix):
		re, err := regexp.Compile(strings.TrimPrefix(pattern, selectorRegexPrefix))
		return err == nil && re.MatchString(name)
	case strings.HasPrefix(pattern, selectorGlobPrefix):
		ok, err := path.Match(strings.TrimPrefix(pattern, selectorGlobPrefix), name)
		return err == nil && ok
	}
	return pattern == name
}

func requirementMatches(req LabelSelectorRequirement, labels map[string]string) bool {
	v, has := labels[req.Key]
	switch req.Operator {
	case "In":
		return has && slices.Contains(req.Values, v)
	case "NotIn":
		return !has || !slices.Contains(req.Values, v)
	case "Exists":
		return has
	case "DoesNotExist":
		return !has
	}
	return false
}

// Newer reports whether a was created after b (by creation time, then by
// name, so the order is total).
func Newer(a, b *Freight) bool {
	ta, tb := creation(a), creation(b)
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.Name > b.Name
}

func creation(f *Freight) time.Time {
	if f.CreationTimestamp == nil {
		return time.Time{}
	}
	return f.CreationTimestamp.Time
}

// SelectionPolicy returns the auto-promotion selection policy of the
// Stage's request for origin (NewestFreight unless set).
func (s *Stage) SelectionPolicy(origin FreightOrigin) AutoPromotionSelectionPolicy {
	req := s.request(origin)
	if req == nil || req.Sources.AutoPromotionOptions == nil || req.Sources.AutoPromotionOptions.SelectionPolicy == "" {
		return AutoPromotionSelectionPolicyNewestFreight
	}
	return req.Sources.AutoPromotionOptions.SelectionPolicy
}

// NewestAvailableFreight returns the newest of freight that is of origin
// and available to stage at now (nil when none is).
func NewestAvailableFreight(freight []*Freight, stage *Stage, origin FreightOrigin, now time.Time) *Freight {
	var best *Freight
	for _, f := range freight {
		if f.Origin != origin || (best != nil && !Newer(f, best)) {
			continue
		}
		if ok, _ := FreightAvailable(f, stage, now); ok {
			best = f
		}
	}
	return best
}

// SelectAutoPromotion returns the Freight of origin auto-promotion would
// promote to stage at now, following the request's selection policy:
// NewestFreight takes the newest available Freight; MatchUpstream takes the
// Freight currently in the request's upstream Stage, when it is available
// (Kargo allows MatchUpstream only with exactly one upstream Stage). The
// string says why nothing was selected.
func SelectAutoPromotion(freight []*Freight, stage *Stage, origin FreightOrigin, now time.Time) (*Freight, string) {
	req := stage.request(origin)
	if req == nil {
		return nil, fmt.Sprintf("stage %q does not request freight from %s", stage.Name, origin)
	}
	if stage.SelectionPolicy(origin) != AutoPromotionSelectionPolicyMatchUpstream {
		if f := NewestAvailableFreight(freight, stage, origin, now); f != nil {
			return f, ""
		}
		return nil, fmt.Sprintf("no available freight from %s", origin)
	}
	if len(req.Sources.Stages) != 1 {
		return nil, fmt.Sprintf("selection policy MatchUpstream needs exactly one upstream stage, request for %s has %d", origin, len(req.Sources.Stages))
	}
	up := req.Sources.Stages[0]
	var current *Freight
	for _, f := range freight {
		if f.Origin == origin && f.IsCurrentlyIn(up) && (current == nil || Newer(f, current)) {
			current = f
		}
	}
	if current == nil {
		return nil, fmt.Sprintf("upstream stage %q has no freight from %s", up, origin)
	}
	if ok, why := FreightAvailable(current, stage, now); !ok {
		return nil, why
	}
	return current, ""
}

// AvailableAt returns when f becomes available to stage, given what is
// known at now: now itself when it already is; the moment its required soak
// time is reached when only soaking is missing and f is still in the
// upstream Stages it must soak in (its soak grows only there), or was
// passed by a control-flow upstream Stage (its soak counts from the
// verification); false when it will not become available by time alone.
func AvailableAt(f *Freight, stage *Stage, now time.Time) (time.Time, bool) {
	if ok, _ := FreightAvailable(f, stage, now); ok {
		return now, true
	}
	req := stage.request(f.Origin)
	if req == nil || req.Sources.RequiredSoakTime == nil {
		return time.Time{}, false
	}
	soak := req.Sources.RequiredSoakTime.Duration
	var at []time.Time
	for _, up := range req.Sources.Stages {
		if !f.IsVerifiedIn(up) {
			continue
		}
		have := f.LongestSoak(up, now)
		if have >= soak {
			at = append(at, now)
			continue
		}
		if c, ok := f.Status.CurrentlyIn[up]; ok && c.Since != nil {
			at = append(at, now.Add(soak-have))
		} else if v := f.Status.VerifiedIn[up]; v.LongestSoak == nil && v.VerifiedAt != nil {
			// A control-flow Stage holds no Freight: its soak counts from
			// the verification.
			at = append(at, now.Add(soak-have))
		}
	}
	if len(at) == 0 {
		return time.Time{}, false
	}
	if req.Sources.AvailabilityStrategy == AvailabilityStrategyAll {
		if len(at) < len(req.Sources.Stages) {
			return time.Time{}, false
		}
		return slices.MaxFunc(at, time.Time.Compare), true
	}
	return slices.MinFunc(at, time.Time.Compare), true
}

// NextSoakDeadline returns the earliest moment after now at which Freight
// of origin newer than selected (nil: any) becomes available to stage by
// soaking alone: when auto-promotion should look again. False when no such
// moment is known.
func NextSoakDeadline(freight []*Freight, stage *Stage, origin FreightOrigin, selected *Freight, now time.Time) (time.Time, bool) {
	var next time.Time
	found := false
	for _, f := range freight {
		if f.Origin != origin || (selected != nil && !Newer(f, selected)) {
			continue
		}
		at, ok := AvailableAt(f, stage, now)
		if !ok || !at.After(now) {
			continue
		}
		if !found || at.Before(next) {
			next, found = at, true
		}
	}
	return next, found
}

// IsVerifying reports whether the Stage's current Freight is still to be
// verified: the Stage has a verification and the newest entry of its
// freight history has no verification yet or one that has not finished.
func IsVerifying(stage *Stage, status *StageStatus) bool {
	if stage.Spec.Verification == nil || len(status.FreightHistory) == 0 {
		return false
	}
	h := status.FreightHistory[0].VerificationHistory
	if len(h) == 0 {
		return true
	}
	for _, v := range h {
		if !v.Phase.IsTerminal() {
			return true
		}
	}
	return false
}

// CurrentFreight returns the Freight the Stage uses now for origin, from
// the newest entry of its freight history.
func (s *StageStatus) CurrentFreight(origin FreightOrigin) (FreightReference, bool) {
	if len(s.FreightHistory) == 0 {
		return FreightReference{}, false
	}
	ref, ok := s.FreightHistory[0].Freight[origin.String()]
	return ref, ok
}

// Held reports whether auto-promotion of origin is paused.
func (s *StageStatus) Held(origin FreightOrigin) bool {
	_, ok := s.AutoPromotionHolds[origin.String()]
	return ok
}

// Hold records a hold on auto-promotion of h.Origin (replacing an earlier
// one of the same origin).
func (s *StageStatus) Hold(h AutoPromotionHold) {
	if s.AutoPromotionHolds == nil {
		s.AutoPromotionHolds = AutoPromotionHolds{}
	}
	s.AutoPromotionHolds[h.Origin.String()] = h
}

// ParseFreightOrigin parses Kargo's origin key "<Kind>/<name>", as the
// auto-promotion hold and resume annotations carry it.
func ParseFreightOrigin(key string) (FreightOrigin, error) {
	kind, name, ok := strings.Cut(key, "/")
	if !ok || FreightOriginKind(kind) != FreightOriginKindWarehouse || name == "" {
		return FreightOrigin{}, fmt.Errorf("%q is not a freight origin: want Warehouse/<name>", key)
	}
	return FreightOrigin{Kind: FreightOriginKindWarehouse, Name: name}, nil
}

// MaxFreightHistory is how many entries a Stage's freight history keeps.
const MaxFreightHistory = 10

// PushFreight returns the Stage's freight history with a new newest entry:
// the current collection with ref replacing the Freight of its origin. The
// history keeps MaxFreightHistory entries. The new entry's ID is derived
// from the Freight it holds.
func (s *StageStatus) PushFreight(ref FreightReference) []FreightCollection {
	items := map[string]FreightReference{}
	if len(s.FreightHistory) > 0 {
		for k, v := range s.FreightHistory[0].Freight {
			items[k] = v
		}
	}
	items[ref.Origin.String()] = ref
	names := make([]string, 0, len(items))
	for _, v := range items {
		names = append(names, v.Name)
	}
	slices.Sort(names)
	col := FreightCollection{ID: fmt.Sprintf("%x", sha1.Sum([]byte(strings.Join(names, ",")))), Freight: items}
	out := append([]FreightCollection{col}, s.FreightHistory...)
	if len(out) > MaxFreightHistory {
		out = out[:MaxFreightHistory]
	}
	return out
}

// Ref returns a FreightReference summarising f.
func (f *Freight) Ref() FreightReference {
	return FreightReference{Name: f.Name, Origin: f.Origin, Commits: f.Commits, Images: f.Images, Charts: f.Charts}
}
