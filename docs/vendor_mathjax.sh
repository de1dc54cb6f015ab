#!/usr/bin/env bash
# Refresh the vendored copy of MathJax in docs/_static/mathjax.
#
# The site renders its mathematics with MathJax from this local copy, so the
# pages need no network, neither when they are built nor when they are read.
# Only the parts that the TeX-to-CommonHTML component loads are kept: the
# combined component, its web fonts and the TeX extensions it may autoload.
# Needs npm (registry access) once; the build itself never downloads anything.
set -euo pipefail
version="${1:-3.2.2}"
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/_static/mathjax"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mathjax@$version" >/dev/null && tar xzf "mathjax-$version.tgz")
src="$tmp/package/es5"
rm -rf "$dest"
mkdir -p "$dest/output/chtml/fonts" "$dest/input/tex"
cp "$src/tex-chtml.js" "$dest/"
cp -r "$src/output/chtml/fonts/woff-v2" "$dest/output/chtml/fonts/"
cp -r "$src/input/tex/extensions" "$dest/input/tex/"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "MathJax $version (npm package mathjax, directory es5/), Apache-2.0; refreshed by docs/vendor_mathjax.sh" > "$dest/VERSION"
echo "vendored MathJax $version into $dest ($(du -sh "$dest" | cut -f1))"
