#!/usr/bin/env bash
# The test command the README gives: every crate's tests, with the second crypto backend enabled
# so the interoperability test runs too. Installs tinyproxy first if it is missing (proxy tests).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tinyproxy >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy
fi
exec cargo test --workspace --all-features "$@"
