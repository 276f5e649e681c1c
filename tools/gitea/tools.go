//go:build tools

// Package tools pins the Gitea server for Caravan's e2e pull-request test
// (scripts/tool.sh gitea builds it). Gitea's module declares its path as
// gitea.dev but is served as code.gitea.io/gitea: go.mod maps one onto the
// other and copies Gitea's own replace directives, which a main module does
// not inherit.
package tools

import _ "gitea.dev"
