package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/caravan-cd/caravan/pkg/model"
)

// BucketOf returns the bucket a kind is stored in: Secrets sealed in
// Secrets, Freight and Promotions in their own buckets (they carry their
// status with them), every other kind's spec in Resources.
func BucketOf(kind string) Bucket {
	switch kind {
	case model.KindSecret:
		return Secrets
	case model.KindFreight:
		return Freight
	case model.KindPromotion:
		return Promotions
	}
	return Resources
}

// ObjectKey returns the key of an object in BucketOf(kind): project.kind.name
// in Resources, project.name in the other buckets. project is "" for
// cluster-scoped kinds.
func ObjectKey(project, kind, name string) string {
	if BucketOf(kind) == Resources {
		return Key(project, kind, name)
	}
	return Key(project, name)
}

// KeyOf returns the key of obj.
func KeyOf(obj model.Object) string {
	kind := obj.GetTypeMeta().Kind
	project := obj.GetObjectMeta().Namespace
	if model.ClusterScoped(kind) {
		project = ""
	}
	return ObjectKey(project, kind, obj.GetObjectMeta().Name)
}

// KindFilter matches every object of kind in project ("" for cluster-scoped
// kinds) in BucketOf(kind).
func KindFilter(project, kind string) string {
	if BucketOf(kind) == Resources {
		return Prefix(project, kind)
	}
	return Prefix(project)
}

// GetObject reads one object. Its metadata.resourceVersion is the entry's
// revision.
func (s *Store) GetObject(ctx context.Context, project, kind, name string) (model.Object, uint64, error) {
	key := ObjectKey(project, kind, name)
	var raw json.RawMessage
	var rev uint64
	var err error
	if kind == model.KindSecret {
		rev, err = s.GetSecret(ctx, key, &raw)
	} else {
		raw, rev, err = Get[json.RawMessage](ctx, s.kvs[BucketOf(kind)], key)
	}
	if err != nil {
		return nil, 0, err
	}
	obj, err := model.DecodeJSONObject(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("decode stored %s %s: %w", kind, key, err)
	}
	obj.GetObjectMeta().ResourceVersion = strconv.FormatUint(rev, 10)
	return obj, rev, nil
}

// GetAs reads one object of a known Go type.
func GetAs[T model.Object](ctx context.Context, s *Store, project, kind, name string) (T, uint64, error) {
	var zero T
	obj, rev, err := s.GetObject(ctx, project, kind, name)
	if err != nil {
		return zero, 0, err
	}
	t, ok := obj.(T)
	if !ok {
		return zero, 0, fmt.Errorf("stored %s %s/%s is a %T", kind, project, name, obj)
	}
	return t, rev, nil
}

// ListAll lists every object of kind in project as its Go type; objects of
// another type are skipped.
func ListAll[T model.Object](ctx context.Context, s *Store, project, kind string) ([]T, error) {
	objs, _, err := s.ListObjects(ctx, project, kind, 0, "")
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// ListObjects lists objects of kind in project, paginated as List.
func (s *Store) ListObjects(ctx context.Context, project, kind string, limit int, after string) ([]model.Object, string, error) {
	filter := KindFilter(project, kind)
	if kind == model.KindSecret {
		keys, err := s.SecretKeys(ctx, filter)
		if err != nil {
			return nil, "", err
		}
		var out []model.Object
		for _, k := range keys {
			if k <= after {
				continue
			}
			if limit > 0 && len(out) == limit {
				return out, KeyOf(out[len(out)-1]), nil
			}
			obj, _, err := s.GetObject(ctx, project, kind, LastToken(k))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, "", err
			}
			out = append(out, obj)
		}
		return out, "", nil
	}
	items, next, err := List[json.RawMessage](ctx, s.kvs[BucketOf(kind)], filter, limit, after)
	if err != nil {
		return nil, "", err
	}
	out := make([]model.Object, 0, len(items))
	for _, it := range items {
		obj, err := model.DecodeJSONObject(it.Value)
		if err != nil {
			return nil, "", fmt.Errorf("decode stored %s %s: %w", kind, it.Key, err)
		}
		obj.GetObjectMeta().ResourceVersion = strconv.FormatUint(it.Revision, 10)
		out = append(out, obj)
	}
	return out, next, nil
}

// PutObject writes obj if its entry is still at revision (0: must not exist
// yet) and returns the new revision; ErrConflict or ErrExists otherwise.
func (s *Store) PutObject(ctx context.Context, obj model.Object, revision uint64) (uint64, error) {
	kind := obj.GetTypeMeta().Kind
	key := KeyOf(obj)
	meta := obj.GetObjectMeta()
	rv := meta.ResourceVersion
	meta.ResourceVersion = "" // the revision is the version; never stored
	defer func() { meta.ResourceVersion = rv }()
	b, err := json.Marshal(obj)
	if err != nil {
		return 0, fmt.Errorf("encode %s %s: %w", kind, key, err)
	}
	if kind == model.KindSecret {
		// Secrets are written last-writer-wins: sealing binds the value to
		// its key, not to a revision.
		return s.PutSecret(ctx, key, json.RawMessage(b))
	}
	kv := s.kvs[BucketOf(kind)]
	var rev uint64
	if revision == 0 {
		rev, err = kv.Create(ctx, key, b)
	} else {
		rev, err = kv.Update(ctx, key, b, revision)
	}
	switch {
	case err == nil:
		return rev, nil
	case isConflict(err) && revision == 0:
		return 0, fmt.Errorf("create %s %s: %w", kind, key, ErrExists)
	case isConflict(err):
		return 0, fmt.Errorf("update %s %s: %w", kind, key, ErrConflict)
	}
	return 0, fmt.Errorf("put %s %s: %w", kind, key, err)
}

// DeleteObject deletes one object (ErrNotFound when absent).
func (s *Store) DeleteObject(ctx context.Context, project, kind, name string) error {
	key := ObjectKey(project, kind, name)
	kv := s.kvs[BucketOf(kind)]
	if _, err := kv.Get(ctx, key); err != nil {
		return fmt.Errorf("%s %s: %w", kind, key, ErrNotFound)
	}
	return Delete(ctx, kv, key, 0)
}
