package events

// The durable consumers of Caravan's services, declared in one place. A
// durable's name is part of the API: renaming it creates a new consumer
// that starts afresh. Every replica of a service binds the same durable, so
// each event is handled once per consumer, by one replica.
var (
	// DiscoveryWarehouseApplied wakes discovery when a Warehouse is applied.
	DiscoveryWarehouseApplied = ConsumerSpec{
		Durable:     "discovery-warehouse-applied",
		Description: "discovery: a Warehouse was created or changed",
		Filters:     []string{Filter(Any, TypeResourceApplied, "Warehouse")},
	}
	// DiscoveryRefresh runs discovery on request (webhooks, the API).
	DiscoveryRefresh = ConsumerSpec{
		Durable:     "discovery-refresh",
		Description: "discovery: WarehouseRefreshRequested",
		Filters:     []string{Filter(Any, TypeWarehouseRefreshRequested, Any)},
	}
	// PromoterPromotionRequested runs promotions.
	PromoterPromotionRequested = ConsumerSpec{
		Durable:     "promoter-promotion-requested",
		Description: "promoter: PromotionRequested",
		Filters:     []string{Filter(Any, TypePromotionRequested, Any)},
	}
	// VerifierPromotionSucceeded verifies a stage after a promotion.
	VerifierPromotionSucceeded = ConsumerSpec{
		Durable:     "verifier-promotion-succeeded",
		Description: "verifier: PromotionSucceeded",
		Filters:     []string{Filter(Any, TypePromotionSucceeded, Any)},
	}
)

// Consumers lists every durable above (for documentation and tooling).
var Consumers = []ConsumerSpec{
	DiscoveryWarehouseApplied,
	DiscoveryRefresh,
	PromoterPromotionRequested,
	VerifierPromotionSucceeded,
}
