#!/usr/bin/env bash
# npm-pkg.sh - the npm package "openpsd" as JS developers install it (issue 19, part 4): one
# package with both targets of scripts/wasm-pkg.sh, its README and its TypeScript types,
# assembled in target/wasm-pkg/npm and packed by `npm pack` into target/wasm-pkg/openpsd-<version>.tgz.
#
#   package.json          "exports": browsers and bundlers get web/, Node (require or import) nodejs/
#   README.md             wasm/README.md
#   web/                  openpsd.js (ES module, --target web), openpsd.d.ts, openpsd_bg.wasm,
#                         storage.js + storage.d.ts ("openpsd/storage")
#   web/cert/             the certificate meter's module ("openpsd/cert"; wasm/API.md § Certificate meter)
#   web/wide.js           + wide.d.ts: picks web/wide/openpsd_bg.wasm, the main module built with
#                         wasm's wide-arithmetic instructions, where the engine has them ("openpsd/wide")
#   web/webcrypto/        the outside signer's module, its driver signer.js and index.js
#                         re-exporting both ("openpsd/webcrypto"; wasm/API.md § WebCrypto signer)
#   nodejs/               openpsd.js (CommonJS, --target nodejs), openpsd.d.ts, openpsd_bg.wasm,
#                         package.json {"type": "commonjs"} (the root is "type": "module")
#
# Nothing else: wasm-bindgen's openpsd_bg.wasm.d.ts (types of the raw exports, for nobody)
# and the per-target package.json files stay out. scripts/npm-test.sh lists the tarball and
# fails on any file not in this list. Needs target/wasm-pkg/{web,nodejs} (scripts/wasm-pkg.sh,
# which runs this script at its end) and npm. Prints the tarball's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PKG=$REPO/target/wasm-pkg
STAGE=$PKG/npm
for f in web/openpsd.js web/storage.js web/wide.js web/wide/openpsd_bg.wasm web/cert/openpsd.js web/webcrypto/index.js nodejs/openpsd.js; do
  [ -f "$PKG/$f" ] || { echo "error: no target/wasm-pkg/$f: run bash scripts/wasm-pkg.sh" >&2; exit 1; }
done
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
LICENSE=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$VERSION" ] && [ -n "$LICENSE" ] || { echo "error: no version/license in Cargo.toml's [workspace.package]" >&2; exit 1; }

rm -rf "$STAGE"
mkdir -p "$STAGE/web/cert" "$STAGE/web/webcrypto" "$STAGE/web/wide" "$STAGE/nodejs"
cp "$PKG"/web/{openpsd.js,openpsd.d.ts,openpsd_bg.wasm,storage.js,storage.d.ts,wide.js,wide.d.ts} "$STAGE/web/"
cp "$PKG"/web/wide/openpsd_bg.wasm "$STAGE/web/wide/"
cp "$PKG"/web/cert/{openpsd.js,openpsd.d.ts,openpsd_bg.wasm} "$STAGE/web/cert/"
cp "$PKG"/web/webcrypto/{openpsd.js,openpsd.d.ts,openpsd_bg.wasm,signer.js,signer.d.ts,index.js,index.d.ts} \
  "$STAGE/web/webcrypto/"
cp "$PKG"/nodejs/{openpsd.js,openpsd.d.ts,openpsd_bg.wasm} "$STAGE/nodejs/"
printf '{\n  "type": "commonjs"\n}\n' >"$STAGE/nodejs/package.json"
cp wasm/README.md "$STAGE/README.md"
node -e '
  const fs = require("fs"), [out, version, license] = process.argv.slice(1);
  const web = (f) => ({ types: `./web/${f}.d.ts`, default: `./web/${f}.js` });
  const p = {
    name: "openpsd",
    version,
    description: "openpsd postal security device (PSD) in WebAssembly: indicia, audits, refills, DataMatrix",
    license,
    keywords: ["postage", "indicium", "psd", "webassembly", "wasm"],
    type: "module",
    // Browsers and bundlers (Vite, webpack, esbuild): the ES module, which fetches its .wasm
    // with new URL(..., import.meta.url). Node: the CommonJS build, which reads it from disk.
    exports: {
      ".": {
        browser: web("openpsd"),
        node: { types: "./nodejs/openpsd.d.ts", default: "./nodejs/openpsd.js" },
        ...web("openpsd"),
      },
      "./storage": web("storage"),
      "./wide": web("wide"),
      "./cert": web("cert/openpsd"),
      "./webcrypto": web("webcrypto/index"),
      "./web": web("openpsd"),
      "./nodejs": { types: "./nodejs/openpsd.d.ts", default: "./nodejs/openpsd.js" },
      "./package.json": "./package.json",
    },
    main: "./nodejs/openpsd.js",
    module: "./web/openpsd.js",
    types: "./web/openpsd.d.ts",
    files: ["web/", "nodejs/"],
    sideEffects: false,
    engines: { node: ">=18" },
  };
  fs.writeFileSync(out + "/package.json", JSON.stringify(p, null, 2) + "\n");
' "$STAGE" "$VERSION" "$LICENSE"

tgz=$(cd "$STAGE" && npm pack --silent --pack-destination "$PKG" 2>/dev/null | tail -n1)
[ -f "$PKG/$tgz" ] || { echo "error: npm pack wrote no tarball" >&2; exit 1; }
printf '== npm package: %s (%d B, %d files)\n' "target/wasm-pkg/$tgz" "$(stat -c %s "$PKG/$tgz")" \
  "$(tar tzf "$PKG/$tgz" | grep -vc '/$')"
echo "$PKG/$tgz"
