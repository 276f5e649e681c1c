package model

// ClusterConfigName is the name of the one ClusterConfig.
const ClusterConfigName = "cluster"

// ClusterConfig is Kargo's cluster-level configuration (one object, named
// "cluster"). Caravan keeps it as applied and enforces its promotion
// windows; its other settings come from the services' configuration.
type ClusterConfig struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       ClusterConfigSpec   `json:"spec,omitzero"`
	Status     ClusterConfigStatus `json:"status,omitzero"`
}

// ClusterConfigSpec holds the cluster's webhook receivers, Git client
// identity, promotion windows and deep links.
type ClusterConfigSpec struct {
	WebhookReceivers []WebhookReceiverConfig `json:"webhookReceivers,omitempty" warn:"cluster-level webhook receivers are stored only: Caravan serves the receivers of ProjectConfigs"`
	GitClient        *GitClientConfig        `json:"gitClient,omitempty"`
	PromotionWindows []PromotionWindow       `json:"promotionWindows,omitempty"`
	FreightLinks     []DeepLink              `json:"freightLinks,omitempty" warn:"deep links are stored for UIs; Caravan renders none"`
	StageLinks       []DeepLink              `json:"stageLinks,omitempty" warn:"deep links are stored for UIs; Caravan renders none"`
}

// GitClientConfig is the identity Kargo's Git client commits as: the
// default author of the commits and tags promotions make (see GitIdentity).
type GitClientConfig struct {
	Name             string                `json:"name,omitempty"`
	Email            string                `json:"email,omitempty"`
	SigningKeySecret *LocalObjectReference `json:"signingKeySecret,omitempty" warn:"Caravan does not sign commits"`
}

// ClusterConfigStatus is a ClusterConfig's observed state.
type ClusterConfigStatus struct {
	Conditions         []Condition              `json:"conditions,omitempty"`
	LastHandledRefresh string                   `json:"lastHandledRefresh,omitempty"`
	ObservedGeneration int64                    `json:"observedGeneration,omitempty"`
	WebhookReceivers   []WebhookReceiverDetails `json:"webhookReceivers,omitempty"`
}
