# Caravan — run `make help` for the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MODULES  := pkg services/discovery services/promoter services/verifier services/gateway cmd/caravan conformance
SERVICES := discovery promoter verifier gateway
BIN      := bin
GO       ?= go
# Generous: CI has two shared cores. Speed targets live in benchmarks.
TEST_TIMEOUT ?= 10m
TEST_FLAGS   ?= -race -count=1 -timeout $(TEST_TIMEOUT)
# The e2e suites run real processes one after another (cmd/caravan's chaos
# and cluster-fault runs take minutes each): a package may need longer.
E2E_TIMEOUT  ?= 40m
E2E_FLAGS    ?= -race -count=1 -timeout $(E2E_TIMEOUT)
FUZZTIME     ?= 60s
# Kargo's published CRDs and step schemas, outside the repository.
KARGO_SPEC   ?= ../shared/kargo-spec
# What bin/caravan is built from: make rebuilds it only when one changed.
GO_SOURCES := $(shell find pkg services cmd -name '*.go' -o -name go.mod -o -name go.sum) go.work go.work.sum

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: $(BIN)/caravan ## build bin/caravan and bin/caravan-<service>
	@for s in $(SERVICES); do \
		echo "$(GO) build -o $(BIN)/caravan-$$s ./services/$$s/cmd/caravan-$$s"; \
		$(GO) build -o $(BIN)/caravan-$$s ./services/$$s/cmd/caravan-$$s; \
	done

# bin/caravan is a file target: run and demo-push build it only when a Go
# source changed since.
$(BIN)/caravan: $(GO_SOURCES)
	$(GO) build -o $(BIN)/caravan ./cmd/caravan

.PHONY: run
run: $(BIN)/caravan ## build bin/caravan (only) and start the whole system with the demo pipeline (data in ./.caravan)
	CARAVAN_DEMO=true $(BIN)/caravan server

.PHONY: demo-push
demo-push: $(BIN)/caravan ## push a new tag of the demo image now (while make run is going)
	$(BIN)/caravan demo push

.PHONY: install
install: ## install caravan into $GOBIN (or $GOPATH/bin)
	$(GO) install ./cmd/caravan
	@gobin=$$($(GO) env GOBIN); echo "installed $${gobin:-$$($(GO) env GOPATH)/bin}/caravan"

.PHONY: test
test: ## run every module's tests with -race (fuzz seed corpora included)
	@for m in $(MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && $(GO) test $(TEST_FLAGS) ./...); \
	done

.PHONY: conformance
conformance: ## check Caravan against Kargo's schemas in KARGO_SPEC (default ../shared/kargo-spec): every CRD field, every step property
	cd conformance && KARGO_SPEC="$(abspath $(KARGO_SPEC))" $(GO) test -tags conformance $(TEST_FLAGS) ./...

.PHONY: conformance-kinds
conformance-kinds: ## the CRD half of make conformance (every field of every kind decodes and is accounted for)
	cd conformance && KARGO_SPEC="$(abspath $(KARGO_SPEC))" $(GO) test -tags conformance $(TEST_FLAGS) -run '^Test(Kinds|Load)' ./...

.PHONY: docs
docs: ## regenerate docs/kargo-compatibility.md from conformance/kinds.yaml and steps.yaml
	cd conformance && $(GO) run ./cmd/compatdoc ../docs/kargo-compatibility.md

.PHONY: tools
tools: ## build the pinned tools (golangci-lint, kube-apiserver, jaeger, helm, nats-server, gitea) into $HOME/.cache/caravan-tools once
	scripts/tool.sh golangci-lint >/dev/null
	scripts/tool.sh kube-apiserver >/dev/null
	scripts/tool.sh jaeger >/dev/null
	scripts/tool.sh helm >/dev/null
	scripts/tool.sh nats-server >/dev/null
	scripts/tool.sh gitea >/dev/null

# Images: IMAGE_REPO/caravan[-<service>]:IMAGE_TAG from deploy/Dockerfile.
IMAGE_REPO ?= ghcr.io/caravan-cd
IMAGE_TAG  ?= dev
CONTAINER  ?= $(shell command -v docker || command -v podman)

.PHONY: images
images: ## build the images of deploy/Dockerfile (caravan and caravan-<service>) with docker or podman
	@[[ -n "$(CONTAINER)" ]] || { echo "images: neither docker nor podman is installed" >&2; exit 1; }
	@for t in caravan $(SERVICES); do \
		name=caravan-$$t; [[ $$t == caravan ]] && name=caravan; \
		echo "$(CONTAINER) build -f deploy/Dockerfile --target $$t -t $(IMAGE_REPO)/$$name:$(IMAGE_TAG) ."; \
		$(CONTAINER) build -f deploy/Dockerfile --target $$t --build-arg VERSION=$(IMAGE_TAG) -t $(IMAGE_REPO)/$$name:$(IMAGE_TAG) .; \
	done

.PHONY: e2e
e2e: ## run the slow, process-level and real-server suites (build tag e2e; needs etcd, prometheus, docker-registry, chromium), then scripts/newcomer.sh
	scripts/tool.sh kube-apiserver >/dev/null
	scripts/tool.sh jaeger >/dev/null
	scripts/tool.sh helm >/dev/null
	scripts/tool.sh nats-server >/dev/null
	scripts/tool.sh gitea >/dev/null
	@for m in $(MODULES); do \
		echo "== go test -tags e2e $$m"; \
		(cd $$m && $(GO) test -tags e2e $(E2E_FLAGS) -run 'E2E' ./...); \
	done
	scripts/newcomer.sh

.PHONY: bench
bench: ## run the benchmarks (each reports its ratio to a baseline measured in the same run)
	@for m in $(MODULES); do \
		echo "== go test -bench $$m"; \
		(cd $$m && $(GO) test -run '^$$' -bench . -benchmem -count=1 ./...); \
	done

.PHONY: bench-ui
bench-ui: ## the web UI in headless Chromium at 1,000 stages and 10,000 freight (build tag e2e; needs chromium)
	cd services/gateway && $(GO) test -tags e2e -run '^$$' -bench 'UIChromium' -benchtime 5x -count=1 .

.PHONY: bench-e2e
bench-e2e: ## push → dev commit p50/p99 on a 3-node cluster vs the all-in-one, promotions/s with 2 promoter replicas vs 1 (build tag e2e; needs docker-registry; not in CI)
	scripts/tool.sh nats-server >/dev/null
	cd cmd/caravan && $(GO) test -tags e2e -run '^$$' -bench 'E2E' -benchtime 1x -count=1 -timeout 30m .

.PHONY: fuzz
fuzz: ## fuzz the manifest decoder, the repository URL policy, the webhook parsers and the step path resolver open-endedly (FUZZTIME=60s each); not part of CI
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./model
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzRepoURL$$' -fuzztime $(FUZZTIME) ./model
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/webhook
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzGeneric$$' -fuzztime $(FUZZTIME) ./internal/webhook
	cd services/promoter && $(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./internal/workdir

.PHONY: lint
lint: ## run golangci-lint (built once from tools/golangci-lint) over every module, e2e and conformance files included
	@lint=$$(scripts/tool.sh golangci-lint); \
	for m in $(MODULES); do \
		echo "== golangci-lint $$m"; \
		(cd $$m && $$lint run --build-tags e2e,conformance ./...); \
	done

.PHONY: fmt
fmt: ## gofmt every Go file
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: verify
verify: ## tidy, format and generate, then fail if the tree changed
	@for m in $(MODULES) tools/golangci-lint; do (cd $$m && GOWORK=off $(GO) mod tidy); done
	$(GO) work sync
	gofmt -s -w $$(git ls-files '*.go')
	@for m in $(MODULES); do (cd $$m && $(GO) generate ./...); done
	$(MAKE) docs
	@git diff --exit-code || { echo "verify: the tree changed; commit the result" >&2; exit 1; }

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
