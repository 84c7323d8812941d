#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/e2e -k kubectl`.
#
# Exits non-zero on any ruff or mypy error, any failing test, and when pytest
# collects no tests at all (its exit code 5), so an empty run never passes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/setup.sh"

BIN="$ROOT/.venv/bin"
export PATH="$BIN:$PATH"
# Per-test timeout (pytest-timeout): a hung watch or server fails one test, not CI.
TEST_TIMEOUT="${SKIFF_TEST_TIMEOUT:-300}"

log() { printf '[test] %s\n' "$*" >&2; }

# Only the folders that exist and hold Python code: mypy rejects one without any.
CODE_DIRS=()
for d in skiff control_plane node_agent cni tests bench; do
    if [[ -d $d ]] && [[ -n "$(find "$d" -name '*.py' -print -quit)" ]]; then
        CODE_DIRS+=("$d")
    fi
done

# Lint, types and tests all run even when an earlier one fails, so one CI log shows
# every problem; the exit code is non-zero if any of them failed.
start=$SECONDS
failed=()

log "ruff check ${CODE_DIRS[*]}"
"$BIN/ruff" check "${CODE_DIRS[@]}" || failed+=("ruff")

# --explicit-package-bases: test folders have no __init__.py, so several conftest.py
# would otherwise all be the module "conftest"; this names them tests.e2e.conftest etc.
log "mypy ${CODE_DIRS[*]}"
"$BIN/mypy" --explicit-package-bases "${CODE_DIRS[@]}" || failed+=("mypy")

log "pytest (per-test timeout ${TEST_TIMEOUT}s)"
rc=0
"$BIN/python" -m pytest -q -rfEs --timeout="$TEST_TIMEOUT" "$@" || rc=$?
case $rc in
    0) ;;
    5) failed+=("pytest: no tests collected (exit 5)") ;;
    *) failed+=("pytest (exit $rc)") ;;
esac

if [[ ${#failed[@]} -gt 0 ]]; then
    log "FAILED after $((SECONDS - start))s: $(IFS=,; echo "${failed[*]}")"
    exit 1
fi
log "all passed in $((SECONDS - start))s"
