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
		// Handlers only queue the promotion (the run happens beside):
		// several at once keep a burst of requests short.
		Concurrency: 4,
	}
	// PromoterPromotionAbort aborts pending and running promotions.
	PromoterPromotionAbort = ConsumerSpec{
		Durable:     "promoter-promotion-abort",
		Description: "promoter: PromotionAbortRequested",
		Filters:     []string{Filter(Any, TypePromotionAbortRequested, Any)},
	}
	// PromoterAutoPromotion re-evaluates auto-promotion (and unblocks a
	// stage's queue once its verification ends).
	PromoterAutoPromotion = ConsumerSpec{
		Durable:     "promoter-auto-promotion",
		Description: "promoter: FreightDiscovered, FreightApproved, StageVerified, AutoPromotionResumeRequested, PromotionApproved, Stage and ProjectConfig applied",
		Filters: []string{
			Filter(Any, TypeFreightDiscovered, Any),
			Filter(Any, TypeFreightApproved, Any),
			Filter(Any, TypeStageVerified, Any),
			Filter(Any, TypeAutoPromotionResumeRequested, Any),
			Filter(Any, TypePromotionApproved, Any),
			Filter(Any, TypeResourceApplied, "Stage"),
			Filter(Any, TypeResourceApplied, "ProjectConfig"),
		},
	}
	// PromoterPullRequestClosed wakes the promotions waiting for a pull
	// request (git-wait-for-pr) at once instead of at their next poll. The
	// replica that takes an event passes it on to every replica over core
	// NATS (caravan.promoter.wake.<project>): the waiting promotion may run
	// on any of them.
	PromoterPullRequestClosed = ConsumerSpec{
		Durable:     "promoter-pull-request-closed",
		Description: "promoter: PullRequestClosed",
		Filters:     []string{Filter(Any, TypePullRequestClosed, Any)},
	}
	// GatewayNotifications records a notification for each subscription of
	// the event's project that wants it (ProjectConfig spec.notifications);
	// the gateway's sender delivers them from the record.
	GatewayNotifications = ConsumerSpec{
		Durable:     "gateway-notifications",
		Description: "gateway: notifications (FreightDiscovered, PromotionRequested, PromotionSucceeded, PromotionFailed, StageVerified)",
		Filters: []string{
			Filter(Any, TypeFreightDiscovered, Any),
			Filter(Any, TypePromotionRequested, Any),
			Filter(Any, TypePromotionSucceeded, Any),
			Filter(Any, TypePromotionFailed, Any),
			Filter(Any, TypeStageVerified, Any),
		},
		Concurrency: 4,
	}
	// VerifierPromotionSucceeded verifies a stage after a promotion.
	VerifierPromotionSucceeded = ConsumerSpec{
		Durable:     "verifier-promotion-succeeded",
		Description: "verifier: PromotionSucceeded",
		Filters:     []string{Filter(Any, TypePromotionSucceeded, Any)},
		// Handlers only record and start a verification (a few KV
		// operations); several at once keep a burst of promotions quick.
		Concurrency: 8,
	}
	// VerifierVerificationRequested re-verifies a stage's current freight.
	VerifierVerificationRequested = ConsumerSpec{
		Durable:     "verifier-verification-requested",
		Description: "verifier: VerificationRequested",
		Filters:     []string{Filter(Any, TypeVerificationRequested, Any)},
	}
	// VerifierVerificationAbort aborts a stage's running verification.
	VerifierVerificationAbort = ConsumerSpec{
		Durable:     "verifier-verification-abort",
		Description: "verifier: VerificationAbortRequested",
		Filters:     []string{Filter(Any, TypeVerificationAbortRequested, Any)},
	}
	// VerifierStageHealthChanged wakes verifications waiting for a stage
	// to become healthy.
	VerifierStageHealthChanged = ConsumerSpec{
		Durable:     "verifier-stage-health-changed",
		Description: "verifier: StageHealthChanged",
		Filters:     []string{Filter(Any, TypeStageHealthChanged, Any)},
	}
)

// Consumers lists every durable above (for documentation and tooling).
var Consumers = []ConsumerSpec{
	DiscoveryWarehouseApplied,
	DiscoveryRefresh,
	PromoterPromotionRequested,
	PromoterPromotionAbort,
	PromoterAutoPromotion,
	PromoterPullRequestClosed,
	GatewayNotifications,
	VerifierPromotionSucceeded,
	VerifierVerificationRequested,
	VerifierVerificationAbort,
	VerifierStageHealthChanged,
}
