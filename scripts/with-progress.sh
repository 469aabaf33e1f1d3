# with-progress.sh - sourced by install-web-toolchain.sh and wasm-common.sh:
#   with_progress LABEL CMD ARGS...
# runs CMD; while it runs, says on stderr every 30 s that LABEL is still going (a long link
# or apt install shows no output of its own). Returns the command's status.
with_progress() {
  local label=$1 t pid rc=0
  shift
  t=$(date +%s)
  ( while sleep 30; do printf '   ... still %s (%d s)\n' "$label" "$(( $(date +%s) - t ))" >&2; done ) &
  pid=$!
  "$@" || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return "$rc"
}
