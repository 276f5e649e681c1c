#!/usr/bin/env bash
# newcomer.sh: the first hour of a newcomer, timed. From a fresh clone of
# this repository, with the README's commands only: `make run`, the demo's
# first promoted and verified stage, prod promoted by hand, then every
# example run offline (`bin/caravan demo example NAME`) to a verified (and,
# where its README says so, promoted) stage, and Ctrl-C with a watch open.
# It prints the time of each milestone and fails (exit 1) at the first
# that does not come within its (generous) timeout.
#
# It listens on free ports only, keeps its data in the clone (a temp dir,
# removed at the end unless KEEP=1) and kills every process it started.
# `make e2e` runs it. Usage: scripts/newcomer.sh [REPO] (default: this
# repository; its committed HEAD is cloned).
set -euo pipefail

repo=${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
timeout_s=${NEWCOMER_TIMEOUT:-300}
work=$(mktemp -d "${TMPDIR:-/tmp}/caravan-newcomer-XXXXXX")
start=$(date +%s)
run_pid=""
watch_pid=""

milestone() { printf '[newcomer] %4ss  %s\n' "$(($(date +%s) - start))" "$*"; }
fail() {
	milestone "FAILED: $*"
	if [[ -f $work/make-run.log ]]; then
		echo "--- make run (last 60 lines) ---"
		tail -n 60 "$work/make-run.log"
	fi
	exit 1
}

cleanup() {
	local code=$?
	for pid in $watch_pid $run_pid; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	if [[ ${KEEP:-} == 1 ]]; then
		echo "[newcomer] kept $work"
	else
		rm -rf "$work"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# free_port prints a port nothing listens on (and not handed out before).
taken=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		[[ $taken == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			taken+="$p "
			echo "$p"
			return
		fi
	done
	fail "no free port"
}

# wait_for DESCRIPTION COMMAND...: runs the command every second until it
# succeeds, for at most timeout_s seconds (WAIT=seconds overrides it).
wait_for() {
	local what=$1 limit=${WAIT:-$timeout_s}
	shift
	local deadline=$(($(date +%s) + limit))
	until "$@" >/dev/null 2>&1; do
		[[ $(date +%s) -lt $deadline ]] || fail "$what: not within ${limit}s"
		if [[ -n $run_pid ]] && ! kill -0 "$run_pid" 2>/dev/null; then
			fail "$what: make run exited"
		fi
		sleep 1
	done
	milestone "$what"
}

# ready PROJECT STAGE: the stage's READY column says True (promoted, and
# verified where it has verification).
ready() {
	bin/caravan get stages -p "$1" | awk -v s="$2" '$1 == s { found = 1; ok = ($4 == "True") } END { exit !(found && ok) }'
}

# newest_alias PROJECT STAGE: the alias of the newest freight verified in
# STAGE (freight lists are newest first).
newest_alias() {
	bin/caravan get freight -p "$1" -o wide | awk -v s="$2" 'NR > 1 && $6 ~ ("(^|,)" s "(,|$)") { print $2; exit }'
}

git clone --quiet "$repo" "$work/caravan"
cd "$work/caravan"
milestone "cloned $repo ($(git rev-parse --short HEAD)) into $work/caravan"

# The README's quick start, on free ports so that nothing else collides.
export CARAVAN_HTTP_ADDR=127.0.0.1:$(free_port)
export CARAVAN_DEMO_REGISTRY_ADDR=127.0.0.1:$(free_port)
export CARAVAN_DEMO_GIT_ADDR=127.0.0.1:$(free_port)
export CARAVAN_EMBEDDED_NATS_ADDR=127.0.0.1:$(free_port)
export CARAVAN_SERVER=http://$CARAVAN_HTTP_ADDR
export CARAVAN_CONFIG=$work/config.yaml
unset CARAVAN_TOKEN CARAVAN_DATA_DIR CARAVAN_PROJECT CARAVAN_DEMO_PUSH_INTERVAL

set -m # background jobs in process groups of their own, as in a terminal
make run >"$work/make-run.log" 2>&1 &
run_pid=$!
set +m
# Building takes longest on a loaded machine (a fresh clone still shares
# the Go build cache).
WAIT=$((4 * timeout_s)) wait_for "make run built bin/caravan" test -x bin/caravan
wait_for "API ready at $CARAVAN_SERVER" bin/caravan get projects
# make run built what it runs, and only that; demo-push does not rebuild.
[[ $(ls bin) == caravan ]] || fail "make run built more than bin/caravan: $(ls bin | tr '\n' ' ')"
if make -n demo-push | grep -q 'go build'; then
	fail "make demo-push would rebuild an up-to-date bin/caravan"
fi
milestone "make run built only bin/caravan; make demo-push would not rebuild it"
wait_for "demo: freight discovered" bash -c 'bin/caravan get freight -p demo | grep -q Warehouse/app'
wait_for "demo: dev promoted and verified (first promoted stage)" ready demo dev
wait_for "demo: staging promoted and verified" ready demo staging
alias=$(newest_alias demo staging)
[[ -n $alias ]] || fail "no freight verified in staging"
bin/caravan promote -p demo --stage prod --freight-alias "$alias" --wait >"$work/promote-prod.log" 2>&1 ||
	{ cat "$work/promote-prod.log"; fail "promote prod"; }
milestone "demo: prod promoted by hand to $alias"
wait_for "demo: prod ready" ready demo prod

# Every example, offline against the demo, as its README says.
bin/caravan demo example kustomize >/dev/null || fail "demo example kustomize"
milestone "kustomize: applied offline"
wait_for "kustomize: dev promoted and verified" ready kustomize-example dev

bin/caravan demo example helm >/dev/null || fail "demo example helm"
milestone "helm: applied offline"
wait_for "helm: test-1 promoted and verified" ready helm-example test-1
bin/caravan promote -p helm-example --stage prod --warehouse podinfo --wait >"$work/promote-helm.log" 2>&1 ||
	{ cat "$work/promote-helm.log"; fail "promote helm prod"; }
milestone "helm: prod promoted by hand"

bin/caravan demo example fan-out >/dev/null || fail "demo example fan-out"
milestone "fan-out: applied offline"
wait_for "fan-out: test promoted and verified" ready fan-out-example test
wait_for "fan-out: uat-eu and uat-us promoted and verified" bash -c "$(declare -f ready); ready fan-out-example uat-eu && ready fan-out-example uat-us"
bin/caravan promote -p fan-out-example --stage prod --warehouse api --wait >"$work/promote-fan-in.log" 2>&1 ||
	{ cat "$work/promote-fan-in.log"; fail "promote fan-out prod"; }
milestone "fan-out: prod promoted by hand (fan-in)"

# Ctrl-C with a watch open: the server stops at once and make says nothing
# of an error.
set -m
bin/caravan watch -p demo >/dev/null 2>"$work/watch.log" &
watch_pid=$!
set +m
wait_for "watch connected" grep -q "Watching the events" "$work/watch.log"
stop=$(date +%s)
kill -INT -- "-$run_pid"
deadline=$(($(date +%s) + 120))
while kill -0 "$run_pid" 2>/dev/null; do
	[[ $(date +%s) -lt $deadline ]] || fail "make run did not stop within 120s of Ctrl-C"
	sleep 0.2
done
wait "$run_pid" 2>/dev/null || true
run_pid=""
milestone "make run stopped $(($(date +%s) - stop))s after Ctrl-C"
grep -q "caravan stopped" "$work/make-run.log" || fail "no clean stop in the log"
if grep -E "make: \*\*\* .*Error" "$work/make-run.log"; then
	fail "make run reported an error after Ctrl-C"
fi
wait_for "watch told of the shutdown" grep -q "the server is shutting down" "$work/watch.log"
milestone "done"
