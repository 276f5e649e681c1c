package model

// Project is a cluster-scoped tenant; its name is the project.
type Project struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       *ProjectSpec  `json:"spec,omitempty"`
	Status     ProjectStatus `json:"status,omitzero"`
}

// ProjectSpec is Kargo's deprecated project spec; its promotion policies
// moved to ProjectConfig.
type ProjectSpec struct {
	PromotionPolicies []PromotionPolicy `json:"promotionPolicies,omitempty" caravan:"ignored"`
}

// ProjectStatus is a Project's observed state.
type ProjectStatus struct {
	Conditions []Condition    `json:"conditions,omitempty"`
	Stats      map[string]any `json:"stats,omitempty"`
}

// ProjectName returns the project the object belongs to: a Project's own
// name, otherwise the namespace ("" for other cluster-scoped kinds).
func ProjectName(obj Object) string {
	if obj.GetTypeMeta().Kind == KindProject {
		return obj.GetObjectMeta().Name
	}
	return obj.GetObjectMeta().Project()
}

// ProjectConfig is a project's configuration; its name equals the project.
type ProjectConfig struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       ProjectConfigSpec   `json:"spec,omitzero"`
	Status     ProjectConfigStatus `json:"status,omitzero"`
}

// ProjectConfigSpec holds promotion policies and webhook receivers.
type ProjectConfigSpec struct {
	PromotionPolicies []PromotionPolicy       `json:"promotionPolicies,omitempty"`
	WebhookReceivers  []WebhookReceiverConfig `json:"webhookReceivers,omitempty"`
	// PromotionWindows gate promotions in time (Kargo Enterprise).
	PromotionWindows []PromotionWindow `json:"promotionWindows,omitempty"`
	// FreightLinks and StageLinks are deep links a UI shows.
	FreightLinks []DeepLink `json:"freightLinks,omitempty" warn:"deep links are stored for UIs; Caravan renders none"`
	StageLinks   []DeepLink `json:"stageLinks,omitempty" warn:"deep links are stored for UIs; Caravan renders none"`
	// ApprovalPolicies make promotions into the Stages they select wait
	// for people to approve them (Caravan addition).
	ApprovalPolicies []ApprovalPolicy `json:"approvalPolicies,omitempty"`
	// Notifications send the project's events to receivers: CloudEvents,
	// Slack-compatible and signed generic webhooks (Caravan addition).
	Notifications []NotificationSubscription `json:"notifications,omitempty"`
	// GitClient is the project's default Git identity and the prefix of
	// the branches git-push generates (Caravan addition; Kargo sets the
	// identity for the whole cluster only, in ClusterConfig).
	GitClient *ProjectGitClient `json:"gitClient,omitempty"`
}

// ProjectGitClient is a project's Git identity (see GitIdentity).
type ProjectGitClient struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	// BranchPrefix precedes the promotion's name in the branch git-push
	// generates (generateTargetBranch).
	BranchPrefix string `json:"branchPrefix,omitempty"`
}

// PromotionPolicy turns auto-promotion on or off for a Stage, named or
// selected.
type PromotionPolicy struct {
	Stage                string                   `json:"stage,omitempty"`
	StageSelector        *PromotionPolicySelector `json:"stageSelector,omitempty"`
	AutoPromotionEnabled bool                     `json:"autoPromotionEnabled,omitempty"`
	// AutoRollback rolls a Stage back to its last verified Freight
	// (Kargo Enterprise).
	AutoRollback *AutoRollback `json:"autoRollback,omitempty"`
}

// AutoRollback lists the outcomes that roll a Stage back.
type AutoRollback struct {
	OnPromotion    []PromotionPhase    `json:"onPromotion,omitempty"`
	OnVerification []VerificationPhase `json:"onVerification,omitempty"`
}

// PromotionWindowKind says whether a window allows or denies promotions.
type PromotionWindowKind string

// Promotion window kinds.
const (
	PromotionWindowAllow PromotionWindowKind = "Allow"
	PromotionWindowDeny  PromotionWindowKind = "Deny"
)

// PromotionWindow is a time window (iCalendar start, end and recurrence
// rule) in which promotions of the selected Stages are allowed or denied.
type PromotionWindow struct {
	Name            string                   `json:"name"`
	Kind            PromotionWindowKind      `json:"kind"`
	DTStart         string                   `json:"dtstart,omitempty"`
	DTEnd           string                   `json:"dtend,omitempty"`
	RRule           string                   `json:"rrule,omitempty"`
	StageSelector   *PromotionPolicySelector `json:"stageSelector,omitempty"`
	ProjectSelector *PromotionPolicySelector `json:"projectSelector,omitempty"`
}

// DeepLink is a link a UI renders for a Freight or Stage: url is an
// expression, if an optional condition.
type DeepLink struct {
	Title       string `json:"title"`
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	If          string `json:"if,omitempty"`
}

// PromotionPolicySelector selects Stages by name (exact, "regex:" or
// "glob:") and labels.
type PromotionPolicySelector struct {
	Name             string                     `json:"name,omitempty"`
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is a Kubernetes set-based label requirement.
type LabelSelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// WebhookReceiverConfig configures one inbound webhook; exactly one
// provider is set.
type WebhookReceiverConfig struct {
	Name        string                  `json:"name"`
	GitHub      *WebhookReceiverSecret  `json:"github,omitempty"`
	GitLab      *WebhookReceiverSecret  `json:"gitlab,omitempty"`
	Gitea       *WebhookReceiverSecret  `json:"gitea,omitempty"`
	Bitbucket   *WebhookReceiverSecret  `json:"bitbucket,omitempty"`
	Quay        *WebhookReceiverSecret  `json:"quay,omitempty"`
	DockerHub   *WebhookReceiverSecret  `json:"dockerhub,omitempty"`
	Harbor      *WebhookReceiverSecret  `json:"harbor,omitempty"`
	Artifactory *ArtifactoryWebhook     `json:"artifactory,omitempty"`
	Azure       *WebhookReceiverSecret  `json:"azure,omitempty"`
	Generic     *GenericWebhookReceiver `json:"generic,omitempty"`
	// Registry is Caravan's own receiver for OCI registry notifications.
	Registry *WebhookReceiverSecret `json:"registry,omitempty"`
}

// Providers returns the names of the providers set on the receiver.
func (w *WebhookReceiverConfig) Providers() []string {
	var out []string
	add := func(set bool, name string) {
		if set {
			out = append(out, name)
		}
	}
	add(w.GitHub != nil, "github")
	add(w.GitLab != nil, "gitlab")
	add(w.Gitea != nil, "gitea")
	add(w.Bitbucket != nil, "bitbucket")
	add(w.Quay != nil, "quay")
	add(w.DockerHub != nil, "dockerhub")
	add(w.Harbor != nil, "harbor")
	add(w.Artifactory != nil, "artifactory")
	add(w.Azure != nil, "azure")
	add(w.Generic != nil, "generic")
	add(w.Registry != nil, "registry")
	return out
}

// WebhookReceiverSecret names the Secret holding a receiver's shared secret.
type WebhookReceiverSecret struct {
	SecretRef LocalObjectReference `json:"secretRef"`
}

// ArtifactoryWebhook is the Artifactory receiver.
type ArtifactoryWebhook struct {
	SecretRef       LocalObjectReference `json:"secretRef"`
	VirtualRepoName string               `json:"virtualRepoName,omitempty"`
}

// GenericWebhookReceiver is Kargo's generic receiver; its actions are kept
// as they are.
type GenericWebhookReceiver struct {
	SecretRef LocalObjectReference `json:"secretRef"`
	Actions   []map[string]any     `json:"actions,omitempty"`
}

// ProjectConfigStatus is a ProjectConfig's observed state.
type ProjectConfigStatus struct {
	Conditions         []Condition              `json:"conditions,omitempty"`
	LastHandledRefresh string                   `json:"lastHandledRefresh,omitempty"`
	ObservedGeneration int64                    `json:"observedGeneration,omitempty"`
	WebhookReceivers   []WebhookReceiverDetails `json:"webhookReceivers,omitempty"`
}

// WebhookReceiverDetails is where a receiver listens.
type WebhookReceiverDetails struct {
	Name string `json:"name"`
	Path string `json:"path,omitempty"`
	URL  string `json:"url,omitempty"`
}
