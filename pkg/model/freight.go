package model

import (
	"crypto/sha1"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// Label and annotation keys Kargo uses.
const (
	LabelAlias    = "kargo.akuity.io/alias"
	LabelCredType = "kargo.akuity.io/cred-type"
	// SharedResourcesProject holds Secrets every project may use: the
	// credentials looked up when a project has none of its own for a
	// repository, as Kargo's shared resources namespace.
	SharedResourcesProject = "kargo-shared-resources"
	LabelProject           = "kargo.akuity.io/project"
)

// Freight is a set of artifact versions moving through Stages together.
type Freight struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Alias      string        `json:"alias,omitempty"`
	Origin     FreightOrigin `json:"origin,omitzero"`
	Commits    []GitCommit   `json:"commits,omitempty"`
	Images     []Image       `json:"images,omitempty"`
	Charts     []Chart       `json:"charts,omitempty"`
	// Artifacts are artifacts of generic subscriptions, which Caravan
	// does not discover; they are kept as applied and take no part in the
	// Freight's ID or in promotions.
	Artifacts []ArtifactReference `json:"artifacts,omitempty" warn:"Caravan has no generic subscriptions: these artifacts are kept but take no part in the Freight's ID or in promotions"`
	// DiscoveredAt is when the Freight was discovered (its creation time
	// unless set).
	DiscoveredAt *Time         `json:"discoveredAt,omitempty"`
	Status       FreightStatus `json:"status,omitzero"`
}

// GitCommit is one commit of one Git repository.
type GitCommit struct {
	// SubscriptionName is the name of the subscription that found the
	// commit (when the subscription has one), and likewise for images and
	// charts.
	SubscriptionName string `json:"subscriptionName,omitempty"`
	RepoURL          string `json:"repoURL,omitempty"`
	ID               string `json:"id,omitempty"`
	Branch           string `json:"branch,omitempty"`
	Tag              string `json:"tag,omitempty"`
	Message          string `json:"message,omitempty"`
	Author           string `json:"author,omitempty"`
	Committer        string `json:"committer,omitempty"`
}

// Image is one version of one container image.
type Image struct {
	SubscriptionName string            `json:"subscriptionName,omitempty"`
	RepoURL          string            `json:"repoURL,omitempty"`
	Tag              string            `json:"tag,omitempty"`
	Digest           string            `json:"digest,omitempty"`
	Annotations      map[string]string `json:"annotations,omitempty"`
}

// Chart is one version of one Helm chart.
type Chart struct {
	SubscriptionName string `json:"subscriptionName,omitempty"`
	RepoURL          string `json:"repoURL,omitempty"`
	Name             string `json:"name,omitempty"`
	Version          string `json:"version,omitempty"`
}

// FreightStatus records where Freight is, was verified and was approved.
type FreightStatus struct {
	CurrentlyIn map[string]CurrentStage  `json:"currentlyIn,omitempty"`
	VerifiedIn  map[string]VerifiedStage `json:"verifiedIn,omitempty"`
	ApprovedFor map[string]ApprovedStage `json:"approvedFor,omitempty"`
	Metadata    map[string]any           `json:"metadata,omitempty"`
}

// CurrentStage says since when a Stage has been using the Freight.
type CurrentStage struct {
	Since *Time `json:"since,omitempty"`
}

// VerifiedStage says when the Freight was verified in a Stage and its
// longest completed soak there.
type VerifiedStage struct {
	VerifiedAt  *Time     `json:"verifiedAt,omitempty"`
	LongestSoak *Duration `json:"longestSoak,omitempty"`
}

// ApprovedStage says when the Freight was manually approved for a Stage.
type ApprovedStage struct {
	ApprovedAt *Time `json:"approvedAt,omitempty"`
}

// Default sets discoveredAt to the creation time when it is unset, as
// Kargo's defaulting webhook does.
func (f *Freight) Default() {
	if f.DiscoveredAt == nil && f.CreationTimestamp != nil {
		t := *f.CreationTimestamp
		f.DiscoveredAt = &t
	}
}

// GenerateID computes the Freight's ID (its name) as Kargo does: the SHA-1,
// in hex, of "<origin>:" followed by the sorted canonical artifact strings
// joined by "|". A commit is "<normalized repo URL>:<id>", or
// "<normalized repo URL>:<tag>:<id>" when it has a tag; an image is
// "<repo URL>:<tag>@<digest>"; a chart is
// "<normalized repo URL>/<name>:<version>".
func (f *Freight) GenerateID() string {
	artifacts := make([]string, 0, len(f.Commits)+len(f.Images)+len(f.Charts))
	for _, c := range f.Commits {
		if c.Tag != "" {
			artifacts = append(artifacts, fmt.Sprintf("%s:%s:%s", NormalizeGitURL(c.RepoURL), c.Tag, c.ID))
		} else {
			artifacts = append(artifacts, fmt.Sprintf("%s:%s", NormalizeGitURL(c.RepoURL), c.ID))
		}
	}
	for _, img := range f.Images {
		artifacts = append(artifacts, fmt.Sprintf("%s:%s@%s", img.RepoURL, img.Tag, img.Digest))
	}
	for _, ch := range f.Charts {
		artifacts = append(artifacts, fmt.Sprintf("%s:%s", path.Join(NormalizeChartURL(ch.RepoURL), ch.Name), ch.Version))
	}
	slices.Sort(artifacts)
	sum := sha1.Sum([]byte(fmt.Sprintf("%s:%s", f.Origin.String(), strings.Join(artifacts, "|"))))
	return fmt.Sprintf("%x", sum)
}

// IsCurrentlyIn reports whether stage uses the Freight now.
func (f *Freight) IsCurrentlyIn(stage string) bool {
	_, ok := f.Status.CurrentlyIn[stage]
	return ok
}

// IsVerifiedIn reports whether the Freight was verified in stage.
func (f *Freight) IsVerifiedIn(stage string) bool {
	_, ok := f.Status.VerifiedIn[stage]
	return ok
}

// IsApprovedFor reports whether the Freight was approved for stage.
func (f *Freight) IsApprovedFor(stage string) bool {
	_, ok := f.Status.ApprovedFor[stage]
	return ok
}

// LongestSoak returns how long the Freight has soaked in stage: the longer
// of its longest completed soak and its current stay. Verified Freight with
// neither recorded counts from its verification time. Unverified Freight
// has soaked for zero.
func (f *Freight) LongestSoak(stage string, now time.Time) time.Duration {
	v, ok := f.Status.VerifiedIn[stage]
	if !ok {
		return 0
	}
	var soak time.Duration
	recorded := false
	if v.LongestSoak != nil {
		soak = v.LongestSoak.Duration
		recorded = true
	}
	if c, ok := f.Status.CurrentlyIn[stage]; ok && c.Since != nil {
		soak = max(soak, now.Sub(c.Since.Time))
		recorded = true
	}
	if !recorded && v.VerifiedAt != nil {
		soak = now.Sub(v.VerifiedAt.Time)
	}
	return soak
}

// FreightAvailable reports whether f may be promoted to stage at now, with
// the reason, following Kargo: the Stage must request f's origin; f is then
// available when that request is direct, when f was approved for the Stage,
// or when f was verified in the upstream Stages — any of them for OneOf,
// every one for All — and has soaked there for the required soak time.
func FreightAvailable(f *Freight, stage *Stage, now time.Time) (bool, string) {
	req := stage.request(f.Origin)
	if req == nil {
		return false, fmt.Sprintf("stage %q does not request freight from %s", stage.Name, f.Origin)
	}
	if req.Sources.Direct {
		return true, fmt.Sprintf("stage %q takes freight from %s directly", stage.Name, f.Origin)
	}
	if f.IsApprovedFor(stage.Name) {
		return true, fmt.Sprintf("freight is approved for stage %q", stage.Name)
	}
	var soak time.Duration
	if req.Sources.RequiredSoakTime != nil {
		soak = req.Sources.RequiredSoakTime.Duration
	}
	var ready, missing []string
	for _, up := range req.Sources.Stages {
		switch {
		case !f.IsVerifiedIn(up):
			missing = append(missing, fmt.Sprintf("not verified in %q", up))
		case f.LongestSoak(up, now) < soak:
			missing = append(missing, fmt.Sprintf("soaked %s of %s in %q", f.LongestSoak(up, now).Round(time.Second), soak, up))
		default:
			ready = append(ready, up)
		}
	}
	if req.Sources.AvailabilityStrategy == AvailabilityStrategyAll {
		if len(missing) == 0 && len(ready) > 0 {
			return true, fmt.Sprintf("verified in all upstream stages %s", strings.Join(quoteAll(ready), ", "))
		}
		return false, "needs all upstream stages: " + strings.Join(missing, "; ")
	}
	if len(ready) > 0 {
		return true, fmt.Sprintf("verified in upstream stage %q", ready[0])
	}
	if len(missing) == 0 {
		return false, "no upstream stages"
	}
	return false, "needs one upstream stage: " + strings.Join(missing, "; ")
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
