#!/usr/bin/env bash
# npm-test.sh - the npm package as JS developers use it (issue 19, part 4), in four checks:
#   1. `npm pack` (scripts/npm-pkg.sh) and the tarball's file list against the exact list
#      below: a stray file (or a missing one) fails;
#   2. the app of tests/npm-app installs the tarball with npm (no registry: it has no
#      dependencies) into target/npm-test/app;
#   3. `tsc --strict` type-checks its TypeScript against the package's .d.ts files, and
#      `vite build` bundles it (TypeScript and Vite pinned by scripts/web-tools/package.json,
#      installed by scripts/install-web-toolchain.sh into $WEB_TOOLS/js, like playwright-core);
#   4. tests/web/npm-app.mjs opens the built app in Chromium: an indicium issued, a reload,
#      the next piece; the barcode verified in Node by the tarball's CommonJS build.
#
#   bash scripts/npm-test.sh     # needs target/wasm-pkg/{web,nodejs} (scripts/wasm-pkg.sh)
#
# scripts/web-test.sh runs it after the browser journeys. Output in target/npm-test/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$REPO/target/npm-test
say() { printf '== npm-test: %s\n' "$*"; }
die() { printf '== npm-test: FAILED: %s\n' "$*" >&2; exit 1; }
t0=$(date +%s)
# shellcheck source=scripts/web-env.sh
source scripts/web-env.sh
for tool in vite tsc; do
  command -v "$tool" >/dev/null || die "$tool missing: run bash scripts/install-web-toolchain.sh"
done

say "npm pack (scripts/npm-pkg.sh)"
packed=$(bash scripts/npm-pkg.sh) || die "scripts/npm-pkg.sh"
echo "$packed"
tgz=$(tail -n1 <<<"$packed")
[ -f "$tgz" ] || die "no tarball"

# 1. Exactly these files, nothing else (npm adds package/ in front).
expected="package.json
README.md
nodejs/openpsd.d.ts
nodejs/openpsd.js
nodejs/openpsd_bg.wasm
nodejs/package.json
web/cert/openpsd.d.ts
web/cert/openpsd.js
web/cert/openpsd_bg.wasm
web/openpsd.d.ts
web/openpsd.js
web/openpsd_bg.wasm
web/storage.d.ts
web/storage.js
web/webcrypto/index.d.ts
web/webcrypto/index.js
web/webcrypto/openpsd.d.ts
web/webcrypto/openpsd.js
web/webcrypto/openpsd_bg.wasm
web/webcrypto/signer.d.ts
web/webcrypto/signer.js
web/wide.d.ts
web/wide.js
web/wide/openpsd_bg.wasm"
actual=$(tar tzf "$tgz" | grep -v '/$' | sed 's|^package/||' | LC_ALL=C sort)
want=$(LC_ALL=C sort <<<"$expected")
if [ "$actual" != "$want" ]; then
  diff <(echo "$want") <(echo "$actual") | sed -n 's/^> /stray: /p; s/^< /missing: /p' >&2
  die "the tarball's files are not the package's list (scripts/npm-test.sh)"
fi
say "tarball holds exactly the $(wc -l <<<"$actual") files of the package (README, types, web + nodejs builds)"
tar xzf "$tgz" -O package/package.json | node -e '
  const p = JSON.parse(require("fs").readFileSync(0, "utf8"));
  for (const k of ["name", "version", "license", "exports", "types", "main", "module"])
    if (!p[k]) { console.error(`package.json has no ${k}`); process.exit(1); }
' || die "package.json incomplete"

# 2. The app, installed as an app installs a package.
rm -rf "$OUT"
mkdir -p "$OUT"
cp -r tests/npm-app "$OUT/app"
cp "$tgz" "$OUT/app/openpsd.tgz"
say "npm install (the tarball) in target/npm-test/app"
(cd "$OUT/app" && npm install --no-audit --no-fund --no-package-lock --silent) || die "npm install of the tarball"
[ -f "$OUT/app/node_modules/openpsd/web/openpsd_bg.wasm" ] || die "openpsd not installed"

# 3. Types, then the bundle.
say "tsc --strict ($(tsc --version)) on tests/npm-app/src"
(cd "$OUT/app" && tsc -p tsconfig.json --strict) || die "tsc --strict"
say "vite build ($(vite --version | cut -d' ' -f1))"
(cd "$OUT/app" && vite build --logLevel warn --outDir dist) || die "vite build"
ls "$OUT/app/dist/assets/"*.wasm >/dev/null 2>&1 || die "vite emitted no .wasm asset"
# The app loads through openpsd/wide: both builds of the main module must be in the bundle.
[ "$(find "$OUT/app/dist/assets" -name '*.wasm' | wc -l)" -ge 2 ] ||
  die "vite emitted one .wasm asset; openpsd/wide's two modules were not both bundled"
say "bundle: $(cd "$OUT/app/dist/assets" && for f in *; do printf '%s %d B; ' "$f" "$(stat -c %s "$f")"; done)"

# 4. In Chromium.
say "the built app in Chromium (tests/web/npm-app.mjs)"
node tests/web/npm-app.mjs --dist "$OUT/app/dist" --app "$OUT/app" \
  --state tests/state/v1/wasm-psd.state --out "$OUT" || die "the app in Chromium"
say "passed in $(( $(date +%s) - t0 )) s"
