// Package events is Caravan's backbone: the versioned event envelope, the
// typed events every service exchanges, the NATS subjects they travel on, the
// JetStream streams and durable consumers that carry them, publishing with
// de-duplication and retry, consuming through one adapter that maps a
// handler's result onto Ack, Nak or Term (with a dead-letter record), and
// OpenTelemetry context propagation across NATS headers.
//
// Handlers registered through [Consume] must be idempotent: JetStream
// delivers at least once, so a handler may see the same event again after a
// redelivery, a replica failover or a dead-letter replay.
package events
