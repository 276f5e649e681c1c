//go:build tools

// Package tools pins kube-apiserver for Caravan's e2e tests
// (scripts/tool.sh kube-apiserver builds it).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
