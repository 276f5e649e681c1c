//go:build tools

// Package tools pins the golangci-lint version used by scripts/tool.sh.
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
