#!/usr/bin/env bash
# Rebuilds the first-party skill packages embedded in the `warden` binary and signs them
# with the release key: `bash skills/packages/release.sh RELEASE_KEY_FILE`.
#
# The release key's private half is never committed. With a new key (`warden key generate
# --out KEY`), this also replaces skills/packages/release-key.pub, the public key compiled
# into the binary. The e2e test `first_party::embedded_packages_match_a_rebuild_from_source`
# (part of `bash tests/run.sh`) rebuilds the components and checks that these packages hold
# exactly what the sources build. See docs/first-party-skills.md.
set -euo pipefail
key=${1:?usage: bash skills/packages/release.sh RELEASE_KEY_FILE}
cd "$(dirname "$0")/../.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build -q -p warden
warden=${CARGO_TARGET_DIR:-target}/debug/warden
"$warden" key public "$key" > skills/packages/release-key.pub.new
mv skills/packages/release-key.pub.new skills/packages/release-key.pub
for skill in http text; do
  "$warden" skill pack "skills/$skill" --key "$key" \
    --target-dir "${CARGO_TARGET_DIR:-target}/wasm-skills" \
    --out "skills/packages/$skill.wsk"
done
# Embed the new packages.
cargo build -q -p warden
echo "release packages written to skills/packages/; commit them with release-key.pub"
