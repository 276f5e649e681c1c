#!/usr/bin/env bash
# Usage: scripts/tool.sh <name>
#
# Builds the tool pinned in tools/<name> (its own module, outside go.work)
# once into $HOME/.cache/caravan-tools/<name>-<go.sum hash>/ and prints the
# binary's path. A change to tools/<name>/go.sum gives a new cache directory,
# so bumping a pin rebuilds automatically.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 <name>" >&2
	exit 2
fi
name=$1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$root/tools/$name

case $name in
golangci-lint) pkg=github.com/golangci/golangci-lint/v2/cmd/golangci-lint ;;
kube-apiserver)
	# A real API server for e2e tests (with Debian etcd-server); ~10 min cold on 2 shared cores.
	pkg=k8s.io/kubernetes/cmd/kube-apiserver
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
	;;
jaeger)
	# Jaeger v2, a real OpenTelemetry backend for the e2e tracing test; ~4.5 min cold, 2.4 GB.
	pkg=github.com/jaegertracing/jaeger/cmd/jaeger
	;;
helm)
	# helm lint --strict and helm template of deploy/helm/caravan; ~70 s cold.
	pkg=helm.sh/helm/v4/cmd/helm
	ldflags="-s -w"
	;;
nats-server)
	# A 3-node JetStream cluster as OS processes in the distributed e2e suite; ~1 min cold.
	pkg=github.com/nats-io/nats-server/v2
	binname=nats-server
	ldflags="-s -w"
	;;
gitea)
	# A real Gitea for the pull request steps' e2e test (pkg/testenv
	# GiteaServer); cold: 8 min of CPU, 53 min on 2 cores shared with a
	# dozen other builds. Its module declares the path gitea.dev (see
	# tools/gitea/go.mod). Pure Go (SQLite through modernc), so no cgo. A
	# build without the bindata tag reads its templates and options from
	# STATIC_ROOT_PATH: they are copied beside the binary.
	pkg=gitea.dev
	binname=gitea
	ldflags="-s -w -X main.Version=1.27.3"
	cgo=0
	assets=(options templates)
	;;
*)
	echo "tool.sh: unknown tool $name" >&2
	exit 2
	;;
esac

if [[ ! -f $dir/go.sum ]]; then
	echo "tool.sh: $dir/go.sum not found" >&2
	exit 1
fi

sum=$(sha256sum "$dir/go.sum" | cut -c1-12)
out=${HOME}/.cache/caravan-tools/$name-$sum
bin=$out/${binname:-$(basename "$pkg")}

if [[ ! -x $bin ]]; then
	mkdir -p "$out"
	# Build to a temporary name and rename, so an interrupted build never
	# leaves a half-written binary that a later run would trust.
	tmp=$(mktemp "$out/.build.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	(cd "$dir" && GOWORK=off CGO_ENABLED=${cgo:-$(go env CGO_ENABLED)} go build -ldflags "${ldflags:-}" -o "$tmp" "$pkg") >&2
	# Assets first: a binary in place means its assets are too.
	if [[ -n ${assets:-} ]]; then
		src=$(cd "$dir" && GOWORK=off go list -m -f '{{with .Replace}}{{.Dir}}{{else}}{{.Dir}}{{end}}' "$pkg")
		for a in "${assets[@]}"; do
			rm -rf "${out:?}/$a"
			cp -R "$src/$a" "$out/$a"
			chmod -R u+w "$out/$a" # the module cache is read-only
		done
	fi
	mv -f "$tmp" "$bin"
	trap - EXIT
fi

echo "$bin"
