# shellcheck shell=bash
# opt-build.sh - sourced by the scripts that build or run optimized code (the PC/SC tests,
# the benchmarks): every optimized build has one shape, so the second script reuses what the
# first one built instead of building the workspace again.
#
# Why: cargo resolves the features of shared crates (tokio, p256, serde_json, ...) from the
# packages a command selects and from whether it needs dev-dependencies. `cargo build
# --release -p openpsd-backoffice` and `cargo bench -p openpsd-core --bench indicium` each
# resolved differently, so each step of CI rebuilt 60-190 crates with fat LTO (one step, the
# refill bench's, took 341 s to build what the PC/SC step had just built). With the whole
# workspace selected and an example or bench among the targets, every build resolves alike:
#
#   opt_build            cargo build --release --workspace --bins --examples   (all binaries)
#   opt_bench NAME ARGS  cargo bench --workspace --bench NAME ARGS             (one benchmark)
#
# opt_build builds every binary and example of the workspace: the first script run by hand
# pays for all of them once, and every other script then finds them built. The bench profile
# has the release profile's settings, so their artifacts are shared.
# OPENPSD_OPT_FEATURES adds features to every build (CI sets openpsd-host/pcsc once for all
# scripts, so the PC/SC host is not rebuilt without it by the next script).

OPT_FEATURES=${OPENPSD_OPT_FEATURES:-}

# opt_need_feature F: make sure F is among the features (the PC/SC scripts need the host's).
opt_need_feature() {
  case ",$OPT_FEATURES," in
    *",$1,"*) ;;
    *) OPT_FEATURES=${OPT_FEATURES:+$OPT_FEATURES,}$1 ;;
  esac
}

opt_build() {
  cargo build --release --workspace --bins --examples ${OPT_FEATURES:+--features "$OPT_FEATURES"} "$@"
}

opt_bench() { # NAME [cargo options] [-- bench arguments]
  local name=$1
  shift
  cargo bench --workspace --bench "$name" ${OPT_FEATURES:+--features "$OPT_FEATURES"} "$@"
}

# The same holds for the debug build of `cargo test --workspace` (the README's test command):
# `cargo test -p openpsd-post` after it rebuilt 52 crates (106 s). A script that runs part of
# the suite again (scripts/postgres-test.sh, on PostgreSQL) selects the whole workspace and
# names the test targets (`cargo test --workspace --test NAME`), and runs one package's unit
# tests from the binary that command built:
#
#   ws_lib_test PACKAGE [test binary arguments]
ws_lib_test() {
  local pkg=$1 exe
  shift
  exe=$(cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
pkg = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
       and m["target"]["kind"] == ["lib"] and m["target"]["name"] == pkg.replace("-", "_"):
        print(m["executable"])
' "$pkg")
  [ -n "$exe" ] || { echo "error: no unit-test binary of $pkg from cargo test --workspace --no-run" >&2; return 1; }
  echo "== $pkg unit tests: ${exe#"$PWD"/}"
  "$exe" "$@"
}
