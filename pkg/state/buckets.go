package state

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket names a KV bucket.
type Bucket string

// The buckets.
const (
	Resources  Bucket = "caravan-resources"
	Secrets    Bucket = "caravan-secrets"
	Stages     Bucket = "caravan-stages"
	Warehouses Bucket = "caravan-warehouses"
	Freight    Bucket = "caravan-freight"
	Promotions Bucket = "caravan-promotions"
	// Tokens holds the gateway's API tokens, hashed.
	Tokens Bucket = "caravan-tokens"
	// WebhookDeliveries remembers recent webhook delivery IDs (with a TTL)
	// so a replayed delivery is ignored.
	WebhookDeliveries Bucket = "caravan-webhook-deliveries"
	// Promoter holds the promoter's coordination records: per-stage
	// promotion queues with their leases, wake-up times of auto-promotion
	// (soak) and the leases of its periodic jobs.
	Promoter Bucket = "caravan-promoter"
	// DiscoveryLeases holds which discovery replica works which Warehouse
	// (value: holder and expiry, renewed by compare-and-set).
	DiscoveryLeases Bucket = "caravan-discovery-leases"
	// Verifications holds the verifier's verification records: one per
	// stage and verification (a promotion, or a re-verification), claimed
	// by one replica under a lease, with its outcome.
	Verifications Bucket = "caravan-verifications"
	// Idempotency remembers the answers of the gateway's requests that
	// carried an Idempotency-Key (with a TTL), so the same key returns the
	// first answer.
	Idempotency Bucket = "caravan-idempotency"
	// Notifications holds the gateway's notification deliveries (pending,
	// sent and dead), one per event and subscription (with a TTL).
	Notifications Bucket = "caravan-notifications"
	// Aliases holds which freight holds each alias (ReserveAlias), so two
	// writers cannot give one alias to two freight.
	Aliases Bucket = "caravan-aliases"
)

// NotificationTTL is how long a notification delivery record is kept
// after its last change.
const NotificationTTL = 7 * 24 * time.Hour

// WebhookDeliveryTTL is how long a webhook delivery ID is remembered.
const WebhookDeliveryTTL = 24 * time.Hour

// IdempotencyTTL is how long the answer to an Idempotency-Key is
// remembered.
const IdempotencyTTL = 24 * time.Hour

// ttls are the buckets whose entries expire.
var ttls = map[Bucket]time.Duration{WebhookDeliveries: WebhookDeliveryTTL, Idempotency: IdempotencyTTL, Notifications: NotificationTTL}

// Buckets lists every bucket Setup declares.
var Buckets = []Bucket{Resources, Secrets, Stages, Warehouses, Freight, Promotions, Tokens, WebhookDeliveries, Promoter, DiscoveryLeases, Verifications, Idempotency, Notifications, Aliases}

// ClusterProject is the project token of cluster-scoped resources.
const ClusterProject = "_"

// Setup declares every bucket with the given replicas. It is idempotent.
func Setup(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, b := range Buckets {
		if err := DeclareBucket(ctx, js, jetstream.KeyValueConfig{
			Bucket:   string(b),
			History:  1,
			Replicas: replicas,
			Storage:  jetstream.FileStorage,
			TTL:      ttls[b],
		}); err != nil {
			return err
		}
	}
	return nil
}

// DeclareBucket creates the bucket, or updates it when its configuration
// differs. An unchanged bucket is left alone: every replica of every
// service declares the buckets at start, and an update that changes
// nothing would still reconfigure the bucket's stream under its consumers.
func DeclareBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) error {
	if kv, err := js.KeyValue(ctx, want.Bucket); err == nil {
		if st, err := kv.Status(ctx); err == nil {
			have := st.Config()
			if have.History == max(want.History, 1) && have.TTL == want.TTL && have.Replicas == max(want.Replicas, 1) &&
				have.Description == want.Description && have.Storage == want.Storage {
				return nil
			}
		}
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, want); err != nil {
		return fmt.Errorf("declare bucket %s: %w", want.Bucket, err)
	}
	return nil
}

// Store binds the buckets.
type Store struct {
	kvs    map[Bucket]jetstream.KeyValue
	sealer *Sealer
}

// Open binds every bucket (declared by Setup). sealer encrypts secrets.
// A watch of a bucket is started with Retry.
func Open(ctx context.Context, js jetstream.JetStream, sealer *Sealer) (*Store, error) {
	s := &Store{kvs: make(map[Bucket]jetstream.KeyValue, len(Buckets)), sealer: sealer}
	for _, b := range Buckets {
		kv, err := js.KeyValue(ctx, string(b))
		if err != nil {
			return nil, fmt.Errorf("bind bucket %s: %w", b, err)
		}
		if kv, err = consistent(ctx, js, kv); err != nil {
			return nil, err
		}
		s.kvs[b] = retryWatchKV{kv}
	}
	return s, nil
}

// KV returns the bucket b. On a replicated bucket its Get reads from the
// stream leader (see Get).
func (s *Store) KV(b Bucket) jetstream.KeyValue { return s.kvs[b] }

// Key joins tokens into a key, escaping each.
func Key(tokens ...string) string {
	for i, t := range tokens {
		tokens[i] = Token(t)
	}
	return strings.Join(tokens, ".")
}

// Prefix returns the filter matching every key below the given tokens.
func Prefix(tokens ...string) string {
	if len(tokens) == 0 {
		return ">"
	}
	return Key(tokens...) + ".>"
}

// Token escapes one key token: "." becomes "_" (RFC 1123 names never hold
// "_"), characters a KV key cannot hold become "-". The empty token is "_".
func Token(s string) string {
	if s == "" {
		return ClusterProject
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.':
			return '_'
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=', r == '/':
			return r
		}
		return '-'
	}, s)
}

// Untoken reverses Token for names (which hold no "_").
func Untoken(t string) string {
	if t == ClusterProject {
		return ""
	}
	return strings.ReplaceAll(t, "_", ".")
}

// ResourceKey is the key of a resource spec.
func ResourceKey(project, kind, name string) string { return Key(project, kind, name) }
