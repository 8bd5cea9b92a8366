#!/usr/bin/env bash
# Builds both runtime images (attache-sidecar, attache-operator) from this machine's static
# release binaries, with the Dockerfile's own runtime stages, without a container daemon:
# buildah (Debian package) with the vfs storage driver and chroot isolation. Then checks them:
# each runs as a non-root user, the sidecar image runs `attache-sidecar demo` inside itself,
# the operator image prints the checked-in CRD, and the sidecar image stays within its size
# budget. Prints the image sizes.
#
#   bash scripts/ci-images.sh            # as root (apt-get and buildah's chroot need it)
#
# Env: RUNTIME_BASE (default scratch: no registry is reachable here; the release workflow uses
# the Dockerfile's default, distroless/static), SIDECAR_MAX_MB (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
target="${CARGO_TARGET_DIR:-$PWD/target}"
musl=x86_64-unknown-linux-musl
base="${RUNTIME_BASE:-scratch}"
max_mb="${SIDECAR_MAX_MB:-20}"
tag=ci

step() { printf '\n=== images: %s (%ss)\n' "$1" "$SECONDS"; }
fail() { echo "ci-images: $*" >&2; exit 1; }

step "tools (buildah, musl-gcc, the $musl target)"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$musl" || rustup target add "$musl"
buildah --version

step "static release binaries"
cargo build --release --locked --target "$musl" -p attache-sidecar -p attache-operator
bin="$target/$musl/release"
for b in attache-sidecar attache-operator; do
  # A static binary: nothing for a scratch image to lack.
  if ldd "$bin/$b" 2>&1 | grep -q '=>'; then fail "$b is dynamically linked"; fi
done

step "build context (the Dockerfile's BINARIES=prebuilt layout)"
ctx="$target/image-context"
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
install -m 0755 "$bin/attache-sidecar" "$bin/attache-operator" "$ctx/bin/"
# As the Dockerfile's build stage does: no symbol table in the images.
strip "$ctx/bin/attache-sidecar" "$ctx/bin/attache-operator"

# Storage of our own under target/, so nothing is shared with other users of the machine.
store="$target/containers"
bah() { buildah --storage-driver vfs --root "$store/storage" --runroot "$store/run" "$@"; }
containers=()
cleanup() {
  for c in "${containers[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
# Images of earlier runs (this storage is ours alone): vfs keeps a full copy of each.
bah rm --all >/dev/null 2>&1 || true
bah rmi --all --force >/dev/null 2>&1 || true

for image in sidecar operator; do
  step "build attache-$image:$tag (FROM $base)"
  bah bud --isolation chroot --quiet -f Dockerfile --target "$image" \
    --build-arg BINARIES=prebuilt --build-arg RUNTIME_BASE="$base" \
    -t "attache-$image:$tag" "$ctx" >/dev/null
  user="$(bah inspect --type image --format '{{.OCIv1.Config.User}}' "attache-$image:$tag")"
  uid="${user%%:*}"
  case "$uid" in
    '' | 0 | root | *[!0-9]*) fail "attache-$image runs as ${user:-root}, not a numeric non-root UID" ;;
  esac
  echo "attache-$image:$tag runs as $user"
done

step "attache-sidecar demo inside the sidecar image"
ctr="$(bah from --quiet "attache-sidecar:$tag")"
containers+=("$ctr")
# By bare name, as the injected container's command is: found through the image's PATH.
bah run --isolation chroot "$ctr" -- attache-sidecar --version
out="$(bah run --isolation chroot "$ctr" -- attache-sidecar demo 2>&1)" ||
  { echo "$out"; fail "the demo failed inside the sidecar image"; }
echo "$out"
grep -q '^Demo finished' <<<"$out" || fail "the demo did not finish inside the sidecar image"

step "attache-operator crd inside the operator image (= crds/)"
ctr="$(bah from --quiet "attache-operator:$tag")"
containers+=("$ctr")
bah run --isolation chroot "$ctr" -- /usr/local/bin/attache-operator crd |
  diff -u crds/externalintegrations.attache.dev.yaml - ||
  fail "the operator image prints a CRD that differs from crds/"

step "sizes"
# Pushed to an OCI layout: the layers as a node pulls them (gzip), and their size unpacked.
layout="$target/image-layout"
rm -rf "$layout"
mkdir -p "$layout"
for image in sidecar operator; do
  bah push --quiet "attache-$image:$tag" "oci:$layout:$image"
done
python3 - "$layout" "$max_mb" <<'PY'
import gzip, json, pathlib, sys
root, max_mb = pathlib.Path(sys.argv[1]), float(sys.argv[2])
blob = lambda digest: root / "blobs" / "sha256" / digest.split(":", 1)[1]

def unpacked(path):
    n = 0
    with gzip.open(path) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    return n

status = 0
for entry in json.loads((root / "index.json").read_text())["manifests"]:
    image = entry["annotations"]["org.opencontainers.image.ref.name"]
    layers = json.loads(blob(entry["digest"]).read_text())["layers"]
    pulled = sum(layer["size"] for layer in layers)
    on_disk = sum(unpacked(blob(layer["digest"])) for layer in layers)
    print(f"attache-{image}:ci  {pulled / 1e6:5.1f} MB compressed ({pulled} bytes), "
          f"{on_disk / 1e6:5.1f} MB unpacked ({on_disk} bytes)")
    if image == "sidecar" and on_disk / 1e6 > max_mb:
        print(f"ci-images: attache-sidecar is over its {max_mb:g} MB budget", file=sys.stderr)
        status = 1
sys.exit(status)
PY
step "done"
