#!/usr/bin/env bash
# Re-fetch the vendored browser libraries from the npm registry and check them against
# SHA256SUMS. Run from anywhere: bash web/vendor/fetch.sh [--update-sums]
# The page never loads anything from a CDN: these files are served by our own server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
MARKDOWN_IT=15.0.3
HIGHLIGHT=11.12.0      # @highlightjs/cdn-assets: the prebuilt browser bundle of highlight.js
KATEX=0.19.1
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "markdown-it@$MARKDOWN_IT" "@highlightjs/cdn-assets@$HIGHLIGHT" "katex@$KATEX" >/dev/null
for t in *.tgz; do mkdir "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done
m="markdown-it-$MARKDOWN_IT/package" h="highlightjs-cdn-assets-$HIGHLIGHT/package" k="katex-$KATEX/package"
mkdir -p "$here/fonts"
cp "$m/dist/browser/markdown-it.umd.min.js" "$here/markdown-it.min.js"
cp "$m/LICENSE" "$here/LICENSE.markdown-it"
cp "$h/highlight.min.js" "$here/highlight.min.js"
cp "$h/styles/github.min.css" "$here/highlight-light.min.css"
cp "$h/styles/github-dark.min.css" "$here/highlight-dark.min.css"
cp "$h/LICENSE" "$here/LICENSE.highlight.js"
cp "$k/dist/katex.min.js" "$here/katex.min.js"
cp "$k/dist/katex.min.css" "$here/katex.min.css"
cp "$k/dist/fonts/"*.woff2 "$here/fonts/"   # Chromium, Firefox and Safari all take woff2 first
cp "$k/LICENSE" "$here/LICENSE.katex"
cd "$here"
if [ "${1:-}" = "--update-sums" ]; then
  find . -type f ! -name SHA256SUMS ! -name fetch.sh ! -name README.md | sort | xargs sha256sum > SHA256SUMS
fi
sha256sum --quiet -c SHA256SUMS && echo "vendored files match SHA256SUMS"
