# web-env.sh - source me: puts the web toolchain of scripts/install-web-toolchain.sh on PATH
# (wasm-bindgen, wasm-bindgen-test-runner, wasm-opt) and lets node find
# playwright-core. It leaves cargo alone: the wasm scripts pick Debian's /usr/bin/cargo themselves.
WEB_TOOLS=${WEB_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/openpsd/web-tools}
export WEB_TOOLS
case ":$PATH:" in
  *":$WEB_TOOLS/bin:"*) ;;
  *) export PATH="$WEB_TOOLS/bin:$WEB_TOOLS/js/node_modules/.bin:$PATH" ;;
esac
export NODE_PATH="$WEB_TOOLS/js/node_modules${NODE_PATH:+:$NODE_PATH}"
