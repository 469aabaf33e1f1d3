#!/usr/bin/env bash
# install-wasm-toolchain.sh - make `cargo build --target wasm32-unknown-unknown` work on Debian 12.
#
# rustup cannot download targets on our machines, so we use Debian's own Rust
# (rustc-web/cargo-web from bookworm-security, which ships the std *sources* in
# rust-web-src) and compile std for wasm32-unknown-unknown once, installing the
# rlibs as an ordinary sysroot target. After that, plain stable
# `/usr/bin/cargo build --target wasm32-unknown-unknown` works.
#
# Idempotent: when the packages are present and the std build matches the
# installed compiler, a run only does a few dpkg/rustc queries (seconds).
# Needs root (or sudo) for apt and for writing into /usr/lib/rustlib.
#
# Deliberately NOT here: chromium, wasm-bindgen-cli (scripts/install-web-toolchain.sh).
set -euo pipefail

TARGET=wasm32-unknown-unknown
PKGS=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
# bookworm's main archive still has rustc-web 1.85; the 1.96 build in bookworm-security
# is the one this recipe was proven with (LLVM 22, matching lld-22).
MIN_RUSTC_WEB=1.96
LIBDIR=/usr/lib/rustlib/$TARGET/lib
STAMP=$LIBDIR/.built-for-rustc
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/openpsd
SCRATCH=$CACHE/wasm-std-build

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

say() { printf '== %s\n' "$*"; }

# ---------------------------------------------------------------- Debian packages
# Each package must be installed ("ii"), and rustc-web must be new enough: an old
# 1.85 rustc-web would satisfy a plain presence check but has no lld-22 to pair with.
packages_ok() {
  local p st ver
  for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [ "${st:0:2}" = ii ] || return 1
  done
  ver=$(dpkg-query -W -f='${Version}' rustc-web)
  dpkg --compare-versions "$ver" ge "$MIN_RUSTC_WEB"
}

if packages_ok; then
  say "Debian rust toolchain for wasm32 already installed ($(/usr/bin/rustc -V))"
else
  say "installing Debian rust toolchain for wasm32 (${PKGS[*]})"
  # A fresh machine's package lists may predate the 1.96 security upload (then lld-22
  # is unknown and rustc-web resolves to 1.85), so always refresh before installing.
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  packages_ok || { echo "error: rustc-web >= $MIN_RUSTC_WEB not available from apt" >&2; exit 1; }
  say "installed $(/usr/bin/rustc -V)"
fi

# ---------------------------------------------------------------- std for wasm32, once
# The stamp ties the installed rlibs to the exact compiler: rlibs from another rustc
# are rejected with "found crate `core` compiled by an incompatible version".
want_stamp=$(/usr/bin/rustc -vV | md5sum)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want_stamp" ]; then
  say "std for $TARGET already built for this rustc ($(find "$LIBDIR" -name '*.rlib' | wc -l) rlibs in $LIBDIR)"
  exit 0
fi

mkdir -p "$CACHE"
# Two concurrent first runs (e.g. parallel CI jobs on one box) would race on the
# scratch dir and on $LIBDIR; serialise them and re-check the stamp under the lock.
exec 9>"$CACHE/wasm-std-build.lock"
flock 9
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want_stamp" ]; then
  say "std for $TARGET was built by a concurrent run"
  exit 0
fi

say "building std for $TARGET from /usr/lib/rustlib/src/rust (takes about a minute)"
t0=$(date +%s)
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/src"
# -Zbuild-std needs some crate to hang off; an empty no_std lib is the cheapest.
cat >"$SCRATCH/Cargo.toml" <<'EOF'
[package]
name = "stdbuild-dummy"
version = "0.0.0"
edition = "2021"

[workspace]

[profile.release]
opt-level = 3
codegen-units = 1
debug = false
EOF
echo '#![no_std]' >"$SCRATCH/src/lib.rs"

# Debian's toolchain only: rustup's proxies would pick rustc 1.95, whose std source we lack.
# RUSTC_BOOTSTRAP=1 (for -Zbuild-std) lives only in this subshell, never in callers' builds.
# -Cembed-bitcode=yes keeps LLVM bitcode in the rlibs so downstream `lto = true` works.
log=$CACHE/wasm-std-build.log
if ! (
  cd "$SCRATCH"
  unset RUSTUP_TOOLCHAIN RUSTC RUSTDOC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO CARGO_BUILD_RUSTC \
        CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR CARGO_ENCODED_RUSTFLAGS
  export PATH=/usr/bin:/bin:/usr/sbin:/sbin
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS=-Cembed-bitcode=yes \
    /usr/bin/cargo build --release --target "$TARGET" \
    -Zbuild-std=std,panic_abort,panic_unwind,test
) >"$log" 2>&1; then
  tail -30 "$log" >&2
  echo "error: std build for $TARGET failed (full log: $log)" >&2
  exit 1
fi

# Install via a temp dir + rename so an interrupted copy never leaves a half sysroot.
tmp=$LIBDIR.new
$SUDO rm -rf "$tmp"
$SUDO mkdir -p "$tmp"
find "$SCRATCH/target/$TARGET/release/deps" -name '*.rlib' ! -name 'libstdbuild_dummy-*' \
  -exec $SUDO cp {} "$tmp/" \;
echo "$want_stamp" | $SUDO tee "$tmp/.built-for-rustc" >/dev/null
$SUDO rm -rf "$LIBDIR"
$SUDO mv "$tmp" "$LIBDIR"
rm -rf "$SCRATCH/target"   # ~200 MB of intermediates we never reuse
say "std for $TARGET installed in $LIBDIR ($(find "$LIBDIR" -name '*.rlib' | wc -l) rlibs, $(( $(date +%s) - t0 )) s)"
