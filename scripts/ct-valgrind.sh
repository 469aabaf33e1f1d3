#!/usr/bin/env bash
# ct-valgrind.sh - the valgrind-based secret-dependence check of the generator table's
# constant-time multiplication (core/examples/ct_valgrind.rs; docs/ecdsa.md): the secret
# scalar is declared undefined to memcheck, which then reports any branch or table index
# computed from it. FixedBaseTable::mul must have no such error; mul_vartime, the control,
# must have some. Builds the example in the optimized build (scripts/opt-build.sh), installs
# Debian's valgrind if it is missing, and exits non-zero when the check fails.
# memcheck's own report (thousands of lines for the control) goes to target/ct-valgrind.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/opt-build.sh

if ! command -v valgrind >/dev/null; then
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "== apt: installing valgrind"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends valgrind >/dev/null
fi
opt_build -q
exe=${CARGO_TARGET_DIR:-target}/release/examples/ct_valgrind
log=${CARGO_TARGET_DIR:-target}/ct-valgrind.log
echo "== $(valgrind --version): valgrind -q --log-file=$log $exe"
valgrind -q --log-file="$log" "$exe"
