package api

import (
	"maps"
	"slices"

	"github.com/caravan-cd/caravan/pkg/model"
)

// lastApplied is kubectl's annotation holding a copy of the whole object,
// values included.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// shownKeys are the Secret keys whose values are not secret and are shown.
var shownKeys = map[string]bool{"repoURL": true}

// secretView is how the API shows a Secret: Kargo's Secret shape, where
// stringData maps every key of the Secret (from data and stringData) to ""
// — except repoURL, shown as it is, as Kargo's credentials API does — and
// data is never present. Metadata loses kubectl's last-applied annotation
// and managedFields, which can carry values.
type secretView struct {
	model.TypeMeta `json:",inline"`
	Metadata       model.ObjectMeta  `json:"metadata"`
	Type           string            `json:"type,omitempty"`
	StringData     map[string]string `json:"stringData"`
}

func redact(s *model.Secret) secretView {
	meta := s.ObjectMeta
	meta.ManagedFields = nil
	if _, ok := meta.Annotations[lastApplied]; ok {
		meta.Annotations = maps.Clone(meta.Annotations)
		delete(meta.Annotations, lastApplied)
	}
	keys := slices.Collect(maps.Keys(s.Data))
	keys = append(keys, slices.Collect(maps.Keys(s.StringData))...)
	data := make(map[string]string, len(keys))
	for _, k := range keys {
		data[k] = ""
		if shownKeys[k] {
			v, _ := s.Value(k)
			data[k] = string(v)
		}
	}
	return secretView{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		Metadata:   meta,
		Type:       s.Type,
		StringData: data,
	}
}
