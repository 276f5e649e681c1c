package model

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Warehouse defaults, as Kargo applies them.
const (
	DefaultWarehouseInterval = 5 * time.Minute
	DefaultDiscoveryLimit    = 20
	MaxDiscoveryLimit        = 100
)

// FreightCreationPolicy says how a Warehouse creates Freight.
type FreightCreationPolicy string

// Freight creation policies.
const (
	FreightCreationPolicyAutomatic FreightCreationPolicy = "Automatic"
	FreightCreationPolicyManual    FreightCreationPolicy = "Manual"
)

// CommitSelectionStrategy selects the newest commit of a Git subscription.
type CommitSelectionStrategy string

// Commit selection strategies.
const (
	CommitSelectionStrategyLexical          CommitSelectionStrategy = "Lexical"
	CommitSelectionStrategyNewestFromBranch CommitSelectionStrategy = "NewestFromBranch"
	CommitSelectionStrategyNewestTag        CommitSelectionStrategy = "NewestTag"
	CommitSelectionStrategySemVer           CommitSelectionStrategy = "SemVer"
)

// ImageSelectionStrategy selects the newest image of an image subscription.
type ImageSelectionStrategy string

// Image selection strategies.
const (
	ImageSelectionStrategyDigest      ImageSelectionStrategy = "Digest"
	ImageSelectionStrategyLexical     ImageSelectionStrategy = "Lexical"
	ImageSelectionStrategyNewestBuild ImageSelectionStrategy = "NewestBuild"
	ImageSelectionStrategySemVer      ImageSelectionStrategy = "SemVer"
)

// Warehouse is a source of Freight.
type Warehouse struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       WarehouseSpec   `json:"spec"`
	Status     WarehouseStatus `json:"status,omitzero"`
}

// WarehouseSpec describes the artifacts a Warehouse subscribes to.
type WarehouseSpec struct {
	Shard                   string                   `json:"shard,omitempty" caravan:"ignored"`
	Interval                Duration                 `json:"interval"`
	FreightCreationPolicy   FreightCreationPolicy    `json:"freightCreationPolicy"`
	Subscriptions           []RepoSubscription       `json:"subscriptions"`
	FreightCreationCriteria *FreightCreationCriteria `json:"freightCreationCriteria,omitempty"`
}

// FreightCreationCriteria is an expression that must hold for Freight to be
// created automatically.
type FreightCreationCriteria struct {
	Expression string `json:"expression,omitempty"`
}

// RepoSubscription subscribes to exactly one of a Git repository, an image
// repository or a Helm chart repository. Kargo also has generic
// subscriptions: an object whose one key is another artifact type
// ({"<type>": {"name", "config", "discoveryLimit"}}); they decode into
// Others and validation refuses them, since Caravan has no subscriber for
// any other type.
type RepoSubscription struct {
	// Name identifies the subscription within its Warehouse; the artifacts
	// it discovers carry it as subscriptionName.
	Name  string             `json:"name,omitempty"`
	Git   *GitSubscription   `json:"git,omitempty"`
	Image *ImageSubscription `json:"image,omitempty"`
	Chart *ChartSubscription `json:"chart,omitempty"`
	// Others holds generic subscriptions, by artifact type.
	Others map[string]GenericSubscription `json:"-" caravan:"others"`
}

// GenericSubscription is Kargo's subscription to an artifact type other
// than git, image and chart, served by a subscriber plugin.
type GenericSubscription struct {
	Name           string         `json:"name,omitempty"`
	Config         map[string]any `json:"config,omitempty"`
	DiscoveryLimit int32          `json:"discoveryLimit,omitempty"`
}

// repoSubscriptionKeys are the keys RepoSubscription knows; any other key
// is a generic subscription's type.
var repoSubscriptionKeys = map[string]bool{"name": true, "git": true, "image": true, "chart": true}

// UnmarshalJSON decodes the known keys and keeps every other key as a
// generic subscription.
func (s *RepoSubscription) UnmarshalJSON(b []byte) error {
	type plain RepoSubscription
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for k, v := range raw {
		if repoSubscriptionKeys[k] {
			continue
		}
		var g GenericSubscription
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("subscription %q: %w", k, err)
		}
		if p.Others == nil {
			p.Others = map[string]GenericSubscription{}
		}
		p.Others[k] = g
	}
	*s = RepoSubscription(p)
	return nil
}

// MarshalJSON writes generic subscriptions back under their type.
func (s RepoSubscription) MarshalJSON() ([]byte, error) {
	type plain RepoSubscription
	b, err := json.Marshal(plain(s))
	if err != nil || len(s.Others) == 0 {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range s.Others {
		m[k] = v
	}
	return json.Marshal(m)
}

// Types returns the subscription types set: git, image, chart and the
// generic ones, sorted.
func (s *RepoSubscription) Types() []string {
	var out []string
	if s.Chart != nil {
		out = append(out, "chart")
	}
	if s.Git != nil {
		out = append(out, "git")
	}
	if s.Image != nil {
		out = append(out, "image")
	}
	for k := range s.Others {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// GitSubscription subscribes to a Git repository.
type GitSubscription struct {
	RepoURL                 string                  `json:"repoURL"`
	CommitSelectionStrategy CommitSelectionStrategy `json:"commitSelectionStrategy,omitempty"`
	Branch                  string                  `json:"branch,omitempty"`
	StrictSemvers           bool                    `json:"strictSemvers"`
	SemverConstraint        string                  `json:"semverConstraint,omitempty"`
	AllowTags               string                  `json:"allowTags,omitempty"`
	AllowTagsRegexes        []string                `json:"allowTagsRegexes,omitempty"`
	IgnoreTags              []string                `json:"ignoreTags,omitempty"`
	IgnoreTagsRegexes       []string                `json:"ignoreTagsRegexes,omitempty"`
	ExpressionFilter        string                  `json:"expressionFilter,omitempty"`
	InsecureSkipTLSVerify   bool                    `json:"insecureSkipTLSVerify,omitempty"`
	IncludePaths            []string                `json:"includePaths,omitempty"`
	ExcludePaths            []string                `json:"excludePaths,omitempty"`
	DiscoveryLimit          int32                   `json:"discoveryLimit,omitempty"`
	// Blobless asks for a blobless clone. Caravan's discovery keeps one
	// bare mirror per repository and fetches only new objects; its Git
	// library has no partial clone, so the field is kept but has no effect.
	Blobless bool `json:"blobless,omitempty" warn:"Caravan's discovery keeps a full bare mirror fetched incrementally; its Git library has no blobless (partial) clone"`
	// Since, an RFC 3339 time, ignores commits (and tags) older than it.
	Since string `json:"since,omitempty"`
}

// UnmarshalJSON applies strictSemvers' default (true) when it is absent.
func (s *GitSubscription) UnmarshalJSON(b []byte) error {
	type plain GitSubscription
	p := plain{StrictSemvers: true}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = GitSubscription(p)
	return nil
}

// ImageSubscription subscribes to a container image repository.
type ImageSubscription struct {
	RepoURL                string                 `json:"repoURL"`
	ImageSelectionStrategy ImageSelectionStrategy `json:"imageSelectionStrategy,omitempty"`
	StrictSemvers          bool                   `json:"strictSemvers"`
	SemverConstraint       string                 `json:"semverConstraint,omitempty"`
	Constraint             string                 `json:"constraint,omitempty"`
	AllowTags              string                 `json:"allowTags,omitempty"`
	AllowTagsRegexes       []string               `json:"allowTagsRegexes,omitempty"`
	IgnoreTags             []string               `json:"ignoreTags,omitempty"`
	IgnoreTagsRegexes      []string               `json:"ignoreTagsRegexes,omitempty"`
	Platform               string                 `json:"platform,omitempty"`
	InsecureSkipTLSVerify  bool                   `json:"insecureSkipTLSVerify,omitempty"`
	DiscoveryLimit         int32                  `json:"discoveryLimit,omitempty"`
	// CacheByTag declares the repository's tags immutable: a tag already
	// resolved is not asked again (but for a hint naming it). Metadata is
	// cached by digest either way.
	CacheByTag bool `json:"cacheByTag,omitempty"`
}

// UnmarshalJSON applies strictSemvers' default (true) when it is absent.
func (s *ImageSubscription) UnmarshalJSON(b []byte) error {
	type plain ImageSubscription
	p := plain{StrictSemvers: true}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = ImageSubscription(p)
	return nil
}

// EffectiveConstraint returns constraint, falling back to the deprecated
// semverConstraint.
func (s *ImageSubscription) EffectiveConstraint() string {
	if s.Constraint != "" {
		return s.Constraint
	}
	return s.SemverConstraint
}

// ChartSubscription subscribes to a Helm chart repository.
type ChartSubscription struct {
	RepoURL               string `json:"repoURL"`
	Name                  string `json:"name,omitempty"`
	SemverConstraint      string `json:"semverConstraint,omitempty"`
	DiscoveryLimit        int32  `json:"discoveryLimit,omitempty"`
	InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify,omitempty"`
}

// WarehouseStatus is a Warehouse's observed state.
type WarehouseStatus struct {
	Conditions          []Condition          `json:"conditions,omitempty"`
	LastHandledRefresh  string               `json:"lastHandledRefresh,omitempty"`
	ObservedGeneration  int64                `json:"observedGeneration,omitempty"`
	LastFreightID       string               `json:"lastFreightID,omitempty"`
	DiscoveredArtifacts *DiscoveredArtifacts `json:"discoveredArtifacts,omitempty"`
	// LastRunAt is when a discovery last ran, successful or not (Caravan
	// addition): discovery's reconciler runs one again when it is older
	// than the Warehouse's interval.
	LastRunAt *Time `json:"lastRunAt,omitempty"`
	// Fence is the lease token of the discovery replica that last wrote
	// this status (Caravan addition): a replica whose lease passed on
	// cannot write it any more.
	Fence uint64 `json:"fence,omitempty"`
}

// DiscoveredArtifacts are the artifacts found by a Warehouse's last discovery.
type DiscoveredArtifacts struct {
	DiscoveredAt Time                   `json:"discoveredAt,omitzero"`
	Git          []GitDiscoveryResult   `json:"git,omitempty"`
	Images       []ImageDiscoveryResult `json:"images,omitempty"`
	Charts       []ChartDiscoveryResult `json:"charts,omitempty"`
	// Results are the artifacts of generic subscriptions (never written
	// by Caravan, which refuses them).
	Results []DiscoveryResult `json:"results,omitempty"`
}

// DiscoveryResult lists the artifacts a generic subscription found.
type DiscoveryResult struct {
	Name               string              `json:"name"`
	ArtifactReferences []ArtifactReference `json:"artifactReferences"`
}

// ArtifactReference is one version of an artifact of a generic
// subscription.
type ArtifactReference struct {
	ArtifactType     string         `json:"artifactType,omitempty"`
	SubscriptionName string         `json:"subscriptionName"`
	Version          string         `json:"version"`
	Metadata         map[string]any `json:"metadata,omitempty"`
}

// GitDiscoveryResult lists commits found for a Git subscription.
type GitDiscoveryResult struct {
	RepoURL          string             `json:"repoURL"`
	SubscriptionName string             `json:"subscriptionName,omitempty"`
	Commits          []DiscoveredCommit `json:"commits"`
	// ObservedRefs are the refs Kargo saw at discovery (Caravan keeps its
	// own record of them in its mirror and leaves this empty).
	ObservedRefs *ObservedRefs `json:"observedRefs,omitempty"`
}

// ObservedRefs are the branch head and tags a Git discovery saw.
type ObservedRefs struct {
	BranchHead string        `json:"branchHead,omitempty"`
	Tags       []ObservedTag `json:"tags,omitempty"`
}

// ObservedTag is one tag and the commit it names.
type ObservedTag struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

// DiscoveredCommit is one commit found by discovery.
type DiscoveredCommit struct {
	ID          string `json:"id,omitempty"`
	Branch      string `json:"branch,omitempty"`
	Tag         string `json:"tag,omitempty"`
	Subject     string `json:"subject,omitempty"`
	Author      string `json:"author,omitempty"`
	Committer   string `json:"committer,omitempty"`
	CreatorDate *Time  `json:"creatorDate,omitempty"`
}

// ImageDiscoveryResult lists image references found for an image
// subscription.
type ImageDiscoveryResult struct {
	RepoURL          string                     `json:"repoURL"`
	SubscriptionName string                     `json:"subscriptionName,omitempty"`
	Platform         string                     `json:"platform,omitempty"`
	References       []DiscoveredImageReference `json:"references"`
}

// DiscoveredImageReference is one image found by discovery.
type DiscoveredImageReference struct {
	Tag         string            `json:"tag"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations,omitempty"`
	CreatedAt   *Time             `json:"createdAt,omitempty"`
}

// ChartDiscoveryResult lists chart versions found for a chart subscription.
type ChartDiscoveryResult struct {
	RepoURL          string   `json:"repoURL"`
	SubscriptionName string   `json:"subscriptionName,omitempty"`
	Name             string   `json:"name,omitempty"`
	SemverConstraint string   `json:"semverConstraint,omitempty"`
	Versions         []string `json:"versions"`
}

// Default applies Kargo's defaults: interval 5m0s, freightCreationPolicy
// Automatic, image strategy SemVer, git strategy NewestFromBranch and a
// discoveryLimit of 20. (strictSemvers defaults to true when decoded.)
func (w *Warehouse) Default() {
	if w.Spec.Interval.Duration == 0 {
		w.Spec.Interval.Duration = DefaultWarehouseInterval
	}
	if w.Spec.FreightCreationPolicy == "" {
		w.Spec.FreightCreationPolicy = FreightCreationPolicyAutomatic
	}
	for i := range w.Spec.Subscriptions {
		sub := &w.Spec.Subscriptions[i]
		if s := sub.Image; s != nil {
			if s.ImageSelectionStrategy == "" {
				s.ImageSelectionStrategy = ImageSelectionStrategySemVer
			}
			if s.DiscoveryLimit == 0 {
				s.DiscoveryLimit = DefaultDiscoveryLimit
			}
		}
		if s := sub.Git; s != nil {
			if s.CommitSelectionStrategy == "" {
				s.CommitSelectionStrategy = CommitSelectionStrategyNewestFromBranch
			}
			if s.DiscoveryLimit == 0 {
				s.DiscoveryLimit = DefaultDiscoveryLimit
			}
		}
		if s := sub.Chart; s != nil && s.DiscoveryLimit == 0 {
			s.DiscoveryLimit = DefaultDiscoveryLimit
		}
	}
}
