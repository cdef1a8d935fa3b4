#!/usr/bin/env bash
# The test command the README gives: every crate's tests, with the second crypto backend enabled
# so the interoperability test runs too. Installs the real tools some tests drive when they are
# missing and we are root: tinyproxy (proxy tests), chromium-headless-shell (HTML report test) and
# the test server's Python package (real_target test).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v tinyproxy >/dev/null 2>&1 || need+=(tinyproxy)
command -v chromium-headless-shell >/dev/null 2>&1 || need+=(chromium-headless-shell)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The independent test server's one Python package (sim/cli/tests/real_target.rs), when root.
if [ "$(id -u)" = 0 ]; then
  python3 -m pip install -r scripts/testserver/requirements.txt --quiet --root-user-action=ignore
fi
exec cargo test --workspace --all-features "$@"
