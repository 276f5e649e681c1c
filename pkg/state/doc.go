// Package state keeps Caravan's current state in JetStream KV buckets:
// resource specs, stage and warehouse status, freight, promotions and
// encrypted secrets. Every read-modify-write goes through Update, which
// compares and sets on the entry's revision and retries on conflict, so two
// writers (two replicas, two handlers) never lose each other's update.
//
// Key layout: tokens separated by dots, each token escaped with Token
// (RFC 1123 names may hold dots; a dot is a KV key separator). Cluster-scoped
// resources use "_" as their project token.
//
//	caravan-resources   <project>.<Kind>.<name>   resource specs (no Secrets)
//	caravan-secrets     <project>.<name>          v1 Secrets, AES-GCM sealed
//	caravan-stages      <project>.<stage>         Stage status
//	caravan-warehouses  <project>.<warehouse>     Warehouse status
//	caravan-freight     <project>.<freight id>    Freight with its status
//	caravan-promotions  <project>.<promotion>     Promotions with status
//	caravan-discovery-leases <project>.<warehouse> which discovery replica works it, until when
//	caravan-tokens      <project>.<token name>    API tokens (SHA-256 of the secret, role)
//	caravan-webhook-deliveries  <sha256 hex>      recent webhook delivery IDs (24h TTL)
//	caravan-promoter    queue.<project>.<stage>   promoter: a stage's promotion queue and lease
//	                    wake.<project>.<stage>    promoter: when to re-evaluate auto-promotion (soak)
//	                    job.<name>                promoter: lease of a periodic job (gc, health)
//	                    auto.<project>.<stage>.<freight>  promoter: auto-promotion decided (or a promotion queued) for it
//	caravan-verifications run.<project>.<stage>.<verification>  verifier: a verification's claim, lease and outcome
//	                    stage.<project>.<stage>   verifier: the stage's current verification
//	caravan-idempotency <sha256 hex>              gateway: answers to Idempotency-Keys (24h TTL)
//	caravan-notifications pending|sent|dead.<project>.<subscription>.<event id>  gateway: notification deliveries (7 days TTL)
//	                    window.<project>.<stage>  gateway: a stage's promotion windows as last seen
//	caravan-aliases     <project>.<alias>         which freight holds the alias, since when (ReserveAlias)
package state
