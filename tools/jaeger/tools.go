//go:build tools

// Package tools pins Jaeger v2 (an OpenTelemetry backend) for Caravan's e2e
// tracing test (scripts/tool.sh jaeger builds it).
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
