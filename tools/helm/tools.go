//go:build tools

// Package tools pins helm for Caravan's chart checks (scripts/tool.sh helm
// builds it): helm lint --strict and helm template in make e2e.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
