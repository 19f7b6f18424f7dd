#!/usr/bin/env bash
# Refresh the vendored Swagger UI from the npm registry (needs npm; running the platform does
# not): bash gateway/www/vendor-swagger-ui.sh VERSION
set -euo pipefail
version=${1:?usage: vendor-swagger-ui.sh VERSION}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf ./*.tgz)
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE \
  favicon-32x32.png; do
  cp "$work/package/$file" "$here/swagger-ui/$file"
done
sed -i "s/\`swagger-ui-dist\` [0-9.]*/\`swagger-ui-dist\` $version/" "$here/swagger-ui/VENDORED.md"
echo "swagger-ui-dist $version vendored into $here/swagger-ui"
