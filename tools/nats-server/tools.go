//go:build tools

// Package tools pins nats-server for Caravan's distributed e2e suite
// (scripts/tool.sh nats-server builds it): a 3-node JetStream cluster as
// three OS processes, SIGKILLed in the fault scenarios.
package tools

import _ "github.com/nats-io/nats-server/v2"
