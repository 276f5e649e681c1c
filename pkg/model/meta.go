// Package model holds Caravan's resource types — Kargo's kinds, unchanged on
// the wire — together with the strict decoder, the validation rules and the
// pure promotion rules (freight identity, aliases, availability). It does no
// I/O and never logs.
package model

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// API versions of the kinds Caravan understands.
const (
	KargoAPIVersion = "kargo.akuity.io/v1alpha1"
	ArgoAPIVersion  = "argoproj.io/v1alpha1"
	CoreAPIVersion  = "v1"
	RBACAPIVersion  = "rbac.authorization.k8s.io/v1"
)

// Kinds Caravan understands.
const (
	KindProject                 = "Project"
	KindProjectConfig           = "ProjectConfig"
	KindWarehouse               = "Warehouse"
	KindStage                   = "Stage"
	KindPromotionTask           = "PromotionTask"
	KindClusterPromotionTask    = "ClusterPromotionTask"
	KindFreight                 = "Freight"
	KindPromotion               = "Promotion"
	KindClusterConfig           = "ClusterConfig"
	KindTarget                  = "Target"
	KindPromotionRequest        = "PromotionRequest"
	KindAnalysisTemplate        = "AnalysisTemplate"
	KindClusterAnalysisTemplate = "ClusterAnalysisTemplate"
	KindSecret                  = "Secret"
	KindConfigMap               = "ConfigMap"
	KindServiceAccount          = "ServiceAccount"
	KindRoleBinding             = "RoleBinding"
)

// Object is implemented by every kind.
type Object interface {
	GetTypeMeta() *TypeMeta
	GetObjectMeta() *ObjectMeta
}

// kindInfo describes one registered kind.
type kindInfo struct {
	apiVersion string
	cluster    bool
	create     func() Object
}

var kinds = map[string]kindInfo{
	KindProject:                 {KargoAPIVersion, true, func() Object { return &Project{} }},
	KindProjectConfig:           {KargoAPIVersion, false, func() Object { return &ProjectConfig{} }},
	KindWarehouse:               {KargoAPIVersion, false, func() Object { return &Warehouse{} }},
	KindStage:                   {KargoAPIVersion, false, func() Object { return &Stage{} }},
	KindPromotionTask:           {KargoAPIVersion, false, func() Object { return &PromotionTask{} }},
	KindClusterPromotionTask:    {KargoAPIVersion, true, func() Object { return &ClusterPromotionTask{} }},
	KindFreight:                 {KargoAPIVersion, false, func() Object { return &Freight{} }},
	KindPromotion:               {KargoAPIVersion, false, func() Object { return &Promotion{} }},
	KindClusterConfig:           {KargoAPIVersion, true, func() Object { return &ClusterConfig{} }},
	KindTarget:                  {KargoAPIVersion, false, func() Object { return &Target{} }},
	KindPromotionRequest:        {KargoAPIVersion, false, func() Object { return &PromotionRequest{} }},
	KindAnalysisTemplate:        {ArgoAPIVersion, false, func() Object { return &AnalysisTemplate{} }},
	KindClusterAnalysisTemplate: {ArgoAPIVersion, true, func() Object { return &ClusterAnalysisTemplate{} }},
	KindSecret:                  {CoreAPIVersion, false, func() Object { return &Secret{} }},
	KindConfigMap:               {CoreAPIVersion, false, func() Object { return &ConfigMap{} }},
	KindServiceAccount:          {CoreAPIVersion, false, func() Object { return &ServiceAccount{} }},
	KindRoleBinding:             {RBACAPIVersion, false, func() Object { return &RoleBinding{} }},
}

// NewObject returns a new, empty object of the given apiVersion and kind with
// its TypeMeta set, or false when Caravan does not know the pair.
func NewObject(apiVersion, kind string) (Object, bool) {
	info, ok := kinds[kind]
	if !ok || info.apiVersion != apiVersion {
		return nil, false
	}
	obj := info.create()
	*obj.GetTypeMeta() = TypeMeta{APIVersion: apiVersion, Kind: kind}
	return obj, true
}

// APIVersionOf returns the apiVersion of a known kind ("" when unknown).
func APIVersionOf(kind string) string {
	return kinds[kind].apiVersion
}

// ClusterScoped reports whether kind is cluster-scoped (has no namespace).
func ClusterScoped(kind string) bool {
	return kinds[kind].cluster
}

// TypeMeta is the apiVersion and kind of an object.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// GetTypeMeta implements Object.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// ObjectMeta is the Kubernetes object metadata Caravan keeps. Fields a
// user's YAML may carry from a cluster (managedFields and the like) are
// accepted and kept as they are.
type ObjectMeta struct {
	Name                       string            `json:"name,omitempty"`
	GenerateName               string            `json:"generateName,omitempty"`
	Namespace                  string            `json:"namespace,omitempty"`
	SelfLink                   string            `json:"selfLink,omitempty"`
	UID                        string            `json:"uid,omitempty"`
	ResourceVersion            string            `json:"resourceVersion,omitempty"`
	Generation                 int64             `json:"generation,omitempty"`
	CreationTimestamp          *Time             `json:"creationTimestamp,omitempty"`
	DeletionTimestamp          *Time             `json:"deletionTimestamp,omitempty"`
	DeletionGracePeriodSeconds *int64            `json:"deletionGracePeriodSeconds,omitempty"`
	Labels                     map[string]string `json:"labels,omitempty"`
	Annotations                map[string]string `json:"annotations,omitempty"`
	OwnerReferences            []OwnerReference  `json:"ownerReferences,omitempty"`
	Finalizers                 []string          `json:"finalizers,omitempty"`
	ManagedFields              []map[string]any  `json:"managedFields,omitempty"`
}

// GetObjectMeta implements Object.
func (m *ObjectMeta) GetObjectMeta() *ObjectMeta { return m }

// Project returns the project the object belongs to: its namespace ("" for
// cluster-scoped kinds). ObjectMeta cannot tell a Project from other kinds;
// use ProjectName(obj) to get a Project's own name as its project.
func (m *ObjectMeta) Project() string {
	return m.Namespace
}

// OwnerReference points at the owner of an object.
type OwnerReference struct {
	APIVersion         string `json:"apiVersion"`
	Kind               string `json:"kind"`
	Name               string `json:"name"`
	UID                string `json:"uid"`
	Controller         *bool  `json:"controller,omitempty"`
	BlockOwnerDeletion *bool  `json:"blockOwnerDeletion,omitempty"`
}

// Condition is a Kubernetes-style status condition.
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
	LastTransitionTime Time   `json:"lastTransitionTime,omitzero"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
}

// Condition statuses.
const (
	ConditionTrue    = "True"
	ConditionFalse   = "False"
	ConditionUnknown = "Unknown"
)

// Time is a point in time, RFC 3339 in UTC on the wire; the zero Time is
// null. A whole second is written as Kubernetes writes it
// ("2025-01-02T03:04:05Z"); a time with a fraction keeps it
// ("2025-01-02T03:04:05.001Z", trailing zeros dropped), so the order of
// events within one second (two Freight discovered in the same second)
// survives a round trip through the store. Kubernetes and Kargo clients
// parse both forms.
type Time struct {
	time.Time
}

// NewTime wraps t.
func NewTime(t time.Time) *Time { return &Time{Time: t} }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	parsed, err := parseTime(s)
	if err != nil {
		return err
	}
	t.Time = parsed
	return nil
}

func parseTime(s string) (time.Time, error) {
	parsed, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time %q: want RFC 3339", s)
	}
	return parsed, nil
}

// Duration is a time.Duration written as a Go duration string ("5m0s") on
// the wire, as Kubernetes' metav1.Duration.
type Duration struct {
	time.Duration
}

// NewDuration wraps d.
func NewDuration(d time.Duration) *Duration { return &Duration{Duration: d} }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	parsed, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = parsed
	return nil
}

// IntOrString holds either an integer or a string, as Argo Rollouts' count
// and limit fields ("5" or 5, or "{{args.count}}").
type IntOrString struct {
	IsString bool
	IntVal   int64
	StrVal   string
}

// MarshalJSON implements json.Marshaler.
func (v IntOrString) MarshalJSON() ([]byte, error) {
	if v.IsString {
		return json.Marshal(v.StrVal)
	}
	return json.Marshal(v.IntVal)
}

// UnmarshalJSON implements json.Unmarshaler.
func (v *IntOrString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		v.IsString = true
		return json.Unmarshal(b, &v.StrVal)
	}
	v.IsString = false
	return json.Unmarshal(b, &v.IntVal)
}

// String returns the value as text.
func (v IntOrString) String() string {
	if v.IsString {
		return v.StrVal
	}
	return strconv.FormatInt(v.IntVal, 10)
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	Name string `json:"name"`
}
