#!/usr/bin/env bash
# Installs the real programs some end-to-end tests start (Debian packages): redis-server for
# the global rate limits, prometheus + promtool for the chart's alerting rules. The tests that
# need one skip with a message when it is missing, unless ATTACHE_TEST_TOOLS=required (as CI
# sets it after running this script), where a missing program is a failure.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-test-tools: must run as root to apt-get ${missing[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
redis-server --version
promtool --version 2>&1 | head -n1
