# shellcheck shell=bash
# opt-build.sh - sourced by the scripts that build or run optimized code (the PC/SC tests,
# the benchmarks): every optimized build has one shape, so the second script reuses what the
# first one built instead of building the workspace again.
#
# Why: cargo resolves the features of shared crates (tokio, p256, serde_json, ...) from the
# packages a command selects and from which of them need their dev-dependencies (a bench, an
# example). `cargo build --release -p openpsd-backoffice`, `cargo bench -p openpsd-core
# --bench indicium` and even `cargo bench --workspace --bench indicium` each resolved
# differently, so the steps of CI rebuilt 20-190 crates each with fat LTO (the refill bench's
# step took 341 s to build what the PC/SC step had just built). So every optimized build
# here is the same command, whatever a script needs from it:
#
#   opt_build            cargo build --release --workspace, the binaries and examples the
#                        scripts run (backoffice, card-sim, openpsd, registry_bench, with the
#                        host's PC/SC feature license_pcsc_bench) and every bench
#   opt_bench NAME [-q] [--no-run] [-- ARGS]
#                        opt_build, then the bench binary NAME it built, run as `cargo bench`
#                        runs it: from its package's directory, `--bench` last
#
# The first script run by hand pays for all of them once; every other script then finds
# them built. (The bench profile has the release profile's settings;
# the binaries are the ones `cargo bench` would build.)
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
  local benches
  benches=$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "bench" in t["kind"]:
            print("--bench", t["name"])
') || return 1
  # The binaries and examples the scripts run, not every one: each is a fat-LTO link of a
  # minute or so. (cargo adds the bins of a package whose bench it builds.)
  local extra="--example registry_bench --example ct_valgrind"
  case ",$OPT_FEATURES," in
    *,openpsd-host/pcsc,*) extra="$extra --example license_pcsc_bench" ;;
  esac
  # shellcheck disable=SC2086 # bench and target names are plain words
  cargo build --release --workspace --bin backoffice --bin card-sim --bin openpsd $extra $benches \
    ${OPT_FEATURES:+--features "$OPT_FEATURES"} "$@"
}

opt_bench() { # NAME [-q] [--no-run] [-- bench arguments]
  local name=$1 quiet=() norun=0 found exe dir
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      -q) quiet=(-q); shift ;;
      --no-run) norun=1; shift ;;
      --) shift; break ;;
      *) echo "opt_bench: unknown option $1" >&2; return 2 ;;
    esac
  done
  found=$(opt_build "${quiet[@]}" --message-format=json-render-diagnostics | python3 -c '
import json, os, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
       and "bench" in m["target"]["kind"] and m["target"]["name"] == name:
        print(m["executable"] + "\t" + os.path.dirname(m["manifest_path"]))
' "$name"; echo "build:${PIPESTATUS[0]}")
  case "$found" in
    *build:0) ;;
    *) echo "opt_bench: the optimized build failed" >&2; return 1 ;;
  esac
  found=${found%build:0}
  exe=${found%%$'\t'*}
  dir=${found#*$'\t'}
  dir=${dir%$'\n'}
  [ -n "$exe" ] && [ -x "$exe" ] || { echo "opt_bench: no bench target named $name" >&2; return 1; }
  [ "$norun" = 1 ] && return 0
  (cd "$dir" && "$exe" "$@" --bench)
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
