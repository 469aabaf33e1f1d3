#!/usr/bin/env bash
# install-web-toolchain.sh - everything the browser PSD (wasm/) and the web demo need on Debian 12:
#
#   * the wasm32 Rust toolchain (scripts/install-wasm-toolchain.sh: Debian rustc-web + std for wasm32)
#   * chromium + chromium-driver (headless browser for wasm-bindgen-test and playwright-core)
#   * dmtx-utils (`dmtxread`) and python3-pylibdmtx: a DataMatrix decoder nobody here wrote
#   * wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock
#     (cargo install into $WEB_TOOLS, default ${XDG_CACHE_HOME:-$HOME/.cache}/openpsd/web-tools),
#     the one tool built from source: no registry reachable here ships it prebuilt at that
#     version. wasm-pack is not needed (scripts/wasm-pkg.sh runs cargo, wasm-bindgen and
#     wasm-opt itself), which saves building a second CLI (~8.5 min on a fresh machine).
#   * binaryen (wasm-opt), playwright-core, and for scripts/npm-test.sh and the journey's
#     accessibility audit Vite, TypeScript and axe-core, from npm into $WEB_TOOLS/js
#     (versions pinned by scripts/web-tools/package.json + package-lock.json)
#
# Idempotent and non-interactive: a second run only checks versions (seconds). Needs root or sudo
# for apt. Afterwards `source scripts/web-env.sh` puts the tools on PATH.
# On a fresh 2-core machine the long steps are the apt installs (Chromium) and building
# wasm-bindgen-cli; each says what it does, and cargo prints every crate it compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

WEB_TOOLS=${WEB_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/openpsd/web-tools}
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
say() { printf '== %s\n' "$*"; }
t0=$(date +%s)
# shellcheck source=with-progress.sh
source "$REPO/scripts/with-progress.sh"

# ---------------------------------------------------------------- Rust for wasm32
bash scripts/install-wasm-toolchain.sh

# ---------------------------------------------------------------- Debian packages
# dmtx-utils is the package holding `dmtxread` (libdmtx's command-line tools).
want=(chromium chromium-driver dmtx-utils)
command -v node >/dev/null || want+=(nodejs)
command -v npm >/dev/null || want+=(npm)
missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${st:0:2}" = ii ] || missing+=("$p")
done
optional=python3-pylibdmtx
st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$optional" 2>/dev/null || true)
if [ "${st:0:2}" != ii ]; then
  if [ "$(apt-cache policy "$optional" 2>/dev/null | sed -n 's/ *Candidate: //p')" ] &&
     [ "$(apt-cache policy "$optional" | sed -n 's/ *Candidate: //p')" != "(none)" ]; then
    missing+=("$optional")
  else
    say "note: $optional not available from apt; dmtxread is enough"
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]} (a minute or two)"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  with_progress "installing ${missing[*]}" $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt: chromium, chromium-driver, dmtx-utils already installed"
fi

# ---------------------------------------------------------------- wasm-bindgen-cli
# Debian's cargo (1.96) builds it; rustup's proxies must not shadow it. No --locked:
# wasm-bindgen-cli's own lock file pins crates the reachable registry does not offer.
# --no-default-features leaves out its TLS stack (11 of its 161 crates: rustls, ring with its C
# and assembly, webpki-roots, ...):
# the test runner only speaks plain HTTP to the local chromedriver, and nothing here fetches
# anything over HTTPS. opt-level 1 instead of 3 builds it faster; what it does here (bind a
# module, run the tests) takes seconds either way.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
unset RUSTUP_TOOLCHAIN RUSTC RUSTDOC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO CARGO_BUILD_RUSTC \
      CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR CARGO_BUILD_TARGET RUSTC_BOOTSTRAP RUSTFLAGS \
      CARGO_ENCODED_RUSTFLAGS
mkdir -p "$WEB_TOOLS/bin" "$WEB_TOOLS/js"

# The CLI must equal the wasm-bindgen crate the workspace links, or wasm-bindgen refuses the module.
WBG=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$REPO/Cargo.lock")
[ -n "$WBG" ] || { echo "error: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
if [ "$("$WEB_TOOLS/bin/wasm-bindgen" --version 2>/dev/null)" = "wasm-bindgen $WBG" ]; then
  say "wasm-bindgen-cli $WBG already installed"
else
  say "cargo install wasm-bindgen-cli =$WBG (~10 min on a fresh 2-core machine; cargo lists each crate)"
  t=$(date +%s)
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    with_progress "building wasm-bindgen-cli" \
    /usr/bin/cargo install --force --root "$WEB_TOOLS" wasm-bindgen-cli --version "=$WBG" \
    --no-default-features
  say "wasm-bindgen-cli $WBG installed in $(( $(date +%s) - t )) s"
fi

# ---------------------------------------------------------------- npm tools
# package.json (+ package-lock.json when present) from the repo pin the versions; reinstall
# only when they changed.
js=$WEB_TOOLS/js
src=$REPO/scripts/web-tools
stamp=$(cat "$src/package.json" "$src/package-lock.json" 2>/dev/null | md5sum)
if [ "$(cat "$js/.installed" 2>/dev/null)" = "$stamp" ] && [ -x "$js/node_modules/.bin/wasm-opt" ]; then
  say "npm tools already installed (binaryen $("$js/node_modules/.bin/wasm-opt" --version | awk '{print $3}'), playwright-core, vite, typescript, axe-core)"
else
  say "npm install binaryen playwright-core vite typescript axe-core into $js"
  cp "$src/package.json" "$js/"
  if [ -f "$src/package-lock.json" ]; then
    cp "$src/package-lock.json" "$js/"
    (cd "$js" && npm ci --no-audit --no-fund --silent)
  else
    rm -f "$js/package-lock.json"
    (cd "$js" && npm install --no-audit --no-fund --silent)
  fi
  echo "$stamp" >"$js/.installed"
fi

"$WEB_TOOLS/bin/wasm-bindgen" --version
"$js/node_modules/.bin/wasm-opt" --version
command -v dmtxread >/dev/null && say "dmtxread: $(command -v dmtxread)"
say "web toolchain ready in $(( $(date +%s) - t0 )) s; put it on PATH with:"
echo "  source scripts/web-env.sh"
echo "  # i.e. export PATH=\"$WEB_TOOLS/bin:$js/node_modules/.bin:\$PATH\" NODE_PATH=\"$js/node_modules\""
