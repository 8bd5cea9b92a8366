#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the end-to-end suite (operator/tests/real_cluster).
#
#   scripts/real-apiserver.sh build          build kube-apiserver + kube-controller-manager (cached)
#   scripts/real-apiserver.sh built          print the cached binaries' folder; exit 1 if not built
#   scripts/real-apiserver.sh start DIR [CRD.json...]
#                                            start etcd, kube-apiserver, (create the CRDs,)
#                                            kube-controller-manager; print DIR/admin.kubeconfig
#   scripts/real-apiserver.sh stop DIR       stop everything `start DIR` started, by PID
#
# No cluster or Kubernetes binary can be downloaded on our CI machines, but Debian bookworm's
# `kubernetes` source package (1.20.2, vendored) builds here with Debian's Go. The build is keyed
# by the source version and cached under $ATTACHE_KUBE_CACHE (default: target/real-apiserver).
# There is no scheduler and no kubelet: pods stay Pending, but admission (injection), RBAC,
# garbage collection, ServiceAccount tokens and ReplicaSets are the real thing.
#
# Webhooks: kube-apiserver dials a `clientConfig.service` at the Service's ClusterIP (the
# TLS server name stays NAME.NAMESPACE.svc). Without kube-proxy, ClusterIPs are taken from a
# loopback range ($ATTACHE_SERVICE_CIDR, default a random 127.x.y.0/24, written to
# DIR/service-cidr), so a webhook server on this host listening on the Service's ClusterIP
# receives the chart's own webhook calls and nothing leaves the machine.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${ATTACHE_KUBE_CACHE:-$root/target/real-apiserver}"
log() { printf 'real-apiserver: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (apt-get)"; }

apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

# The deb-src entry mirrors the machine's own deb entry for bookworm (only bookworm ships the full
# source; later suites ship kubectl only).
enable_deb_src() {
    local src=/etc/apt/sources.list.d/attache-deb-src.sources
    [ -f "$src" ] && return 0
    local base=/etc/apt/sources.list.d/debian.sources
    [ -f "$base" ] || die "$base not found: cannot derive a deb-src entry"
    sed -n '/^Types: deb$/,/^$/p' "$base" | awk 'BEGIN{n=0} /^Types: deb$/{n++} n==1' \
        | sed 's/^Types: deb$/Types: deb-src/' >"$src"
    grep -q '^Suites:.*bookworm' "$src" || die "the first deb entry of $base is not bookworm"
    apt-get update -qq >/dev/null
}

# Revision of the build recipe below (part of the cache key).
RECIPE=r3

source_version() { apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2; exit}'; }

cmd_build() {
    need_root
    apt_install golang-go etcd-server rsync make openssl dpkg-dev
    enable_deb_src
    local version; version="$(source_version)"
    [ -n "$version" ] || die "apt-cache showsrc kubernetes found no source package"
    # The recipe's revision is part of the key: a change to how we build rebuilds.
    local out="$cache/$version-$RECIPE"
    if [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ]; then
        log "cached: $out/bin"; echo "$out/bin"; return 0
    fi
    local work="$cache/build"
    rm -rf "$work"; mkdir -p "$work/dl"
    log "downloading the kubernetes $version source package"
    (cd "$work/dl" && apt-get source --download-only -qq kubernetes >/dev/null)
    local orig; orig="$(find "$work/dl" -maxdepth 1 -name 'kubernetes_*.orig.tar.*' | head -1)"
    local gopath="$work/gopath" tree="$work/gopath/src/k8s.io/kubernetes"
    mkdir -p "$tree"
    tar -xf "$orig" -C "$tree" --strip-components=1
    # reflect2 1.0.1 (vendored) crashes the apiserver under Go >= 1.18 when it encodes a
    # validation error; Debian's 1.0.2 source replaces it.
    (cd "$work/dl" && apt-get download -qq golang-github-modern-go-reflect2-dev >/dev/null)
    dpkg -x "$work"/dl/golang-github-modern-go-reflect2-dev_*.deb "$work/reflect2"
    local r2; r2="$(find "$work/reflect2" -type d -path '*github.com/modern-go/reflect2' | head -1)"
    [ -n "$r2" ] || die "reflect2 sources not found in golang-github-modern-go-reflect2-dev"
    rm -f "$tree"/vendor/github.com/modern-go/reflect2/*.go "$tree"/vendor/github.com/modern-go/reflect2/*.s
    cp "$r2"/*.go "$tree/vendor/github.com/modern-go/reflect2/"
    cp "$r2"/*.s "$tree/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true
    rm -f "$tree"/vendor/github.com/modern-go/reflect2/*_test.go
    export GOPATH="$gopath" GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=
    export GOCACHE="$cache/gocache"
    log "generating pkg/generated/openapi (make gen_openapi)"
    (cd "$tree" && make gen_openapi >"$work/gen_openapi.log" 2>&1) \
        || { tail -20 "$work/gen_openapi.log" >&2; die "make gen_openapi failed"; }
    log "building kube-apiserver and kube-controller-manager (4 to 12 minutes cold on 2 cores)"
    mkdir -p "$out/bin"
    # The release scripts stamp the version; without it /version says v0.0.0-master with empty
    # major/minor, and version-dependent code paths (native sidecars) are not exercised.
    local upstream="${version#*really}"; upstream="${upstream%%-*}"; upstream="${upstream%%+*}"
    local major="${upstream%%.*}" minor; minor="${upstream#*.}"; minor="${minor%%.*}"
    # Both version packages, as Kubernetes' own hack/lib/version.sh stamps them (--version
    # reads one, the /version endpoint the other).
    local vpkg ldflags=""
    for vpkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
        k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
        ldflags+=" -X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
        ldflags+=" -X $vpkg.gitTreeState=clean"
    done
    (cd "$tree" && go build -ldflags "$ldflags" -o "$out/bin/" ./cmd/kube-apiserver ./cmd/kube-controller-manager) \
        || die "go build failed"
    rm -rf "$work"
    log "built: $out/bin"
    echo "$out/bin"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
    log "$what ready"
}

make_certs() {
    # Every certificate is X.509 v3 with its usages: rustls (the operator's client) refuses v1
    # certificates, which `openssl x509 -req` makes when given no extensions.
    local d="$1"
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=attache-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.crt 2>/dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=serverAuth' \
        'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc' >server.ext
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=clientAuth' >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key \
        -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout admin.key \
        -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    cd - >/dev/null
}

kubeconfig() { # kubeconfig DIR PORT
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: real
  cluster:
    server: https://127.0.0.1:$2
    certificate-authority: $1/ca.crt
users:
- name: admin
  user:
    client-certificate: $1/admin.crt
    client-key: $1/admin.key
contexts:
- name: real
  context: {cluster: real, user: admin}
current-context: real
EOF
}

# crd_established URL: the CRD at URL has condition Established=True (uses cmd_start's $tls).
crd_established() {
    curl -fsS "${tls[@]}" "$1" | python3 -c '
import json, sys
conditions = json.load(sys.stdin).get("status", {}).get("conditions", [])
sys.exit(0 if any(c["type"] == "Established" and c["status"] == "True" for c in conditions) else 1)'
}

cmd_built() {
    local d
    for d in "$cache"/*-"$RECIPE"/bin; do
        if [ -x "$d/kube-apiserver" ] && [ -x "$d/kube-controller-manager" ]; then
            echo "$d"; return 0
        fi
    done
    return 1
}

cmd_start() {
    need_root
    local dir="${1:?usage: start DIR [CRD.json...]}"; shift
    mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
    [ -f "$dir/pids" ] && die "$dir/pids exists: stop the previous control plane first"
    apt_install etcd-server openssl curl
    local bin; bin="$(cmd_built || cmd_build)"
    make_certs "$dir"
    local etcd_port peer_port api_port
    etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
    : >"$dir/pids"

    etcd --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" \
        >"$dir/etcd.log" 2>&1 &
    echo $! >>"$dir/pids"
    wait_for 30 etcd curl -fsS "http://127.0.0.1:$etcd_port/health" || die "etcd did not start: $dir/etcd.log"

    # The audit log records every request of a ServiceAccount, so a missing RBAC rule is a 403
    # the suite can find.
    cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
EOF
    # Service ClusterIPs come from a loopback /24 of this run: kube-apiserver dials a webhook
    # Service at its ClusterIP (the TLS name stays NAME.NAMESPACE.svc), and with no kube-proxy
    # here only a loopback address reaches a webhook server running on this machine. Anything
    # else leaves the machine. The range is written to DIR/service-cidr.
    local cidr="${ATTACHE_SERVICE_CIDR:-127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).0/24}"
    echo "$cidr" >"$dir/service-cidr"

        "$bin/kube-apiserver" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \
        --client-ca-file="$dir/ca.crt" \
        --service-account-key-file="$dir/sa.pub" \
        --service-account-signing-key-file="$dir/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,OwnerReferencesPermissionEnforcement \
        --service-cluster-ip-range="$cidr" \
        --audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log" \
        --allow-privileged=true --cert-dir="$dir/apiserver-certs" \
        >"$dir/apiserver.log" 2>&1 &
    echo $! >>"$dir/pids"
    kubeconfig "$dir" "$api_port" >"$dir/admin.kubeconfig"
    wait_for 60 kube-apiserver curl -fsS --cacert "$dir/ca.crt" --cert "$dir/admin.crt" \
        --key "$dir/admin.key" "https://127.0.0.1:$api_port/readyz" \
        || die "kube-apiserver did not become ready: $dir/apiserver.log"

    # CRDs given after DIR are created before the controller manager starts: its garbage
    # collector then watches their kinds from the start instead of finding them at its next
    # 30-second discovery (owned objects of a resource deleted before that are never collected).
    local crd api="https://127.0.0.1:$api_port" tls=(--cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key")
    for crd in "$@"; do
        local name
        name="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["name"])' "$crd")" \
            || die "$crd: not a JSON CustomResourceDefinition"
        curl -fsS "${tls[@]}" -H 'Content-Type: application/json' --data-binary "@$crd" \
            "$api/apis/apiextensions.k8s.io/v1/customresourcedefinitions" >/dev/null \
            || die "creating the CRD in $crd failed"
        wait_for 30 "CRD $name" crd_established "$api/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name" \
            || die "CRD $name did not become Established"
    done

    "$bin/kube-controller-manager" --kubeconfig="$dir/admin.kubeconfig" \
        --authentication-kubeconfig="$dir/admin.kubeconfig" \
        --authorization-kubeconfig="$dir/admin.kubeconfig" \
        --use-service-account-credentials --service-account-private-key-file="$dir/sa.key" \
        --root-ca-file="$dir/ca.crt" --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port=0 --port=0 \
        --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service' \
        >"$dir/controller-manager.log" 2>&1 &
    echo $! >>"$dir/pids"
    # The controller manager is ready for us once it has made the default ServiceAccount.
    wait_for 60 kube-controller-manager curl -fsS --cacert "$dir/ca.crt" --cert "$dir/admin.crt" \
        --key "$dir/admin.key" "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default" \
        || die "kube-controller-manager did not create the default ServiceAccount: $dir/controller-manager.log"
    echo "$dir/admin.kubeconfig"
}

cmd_stop() {
    local dir="${1:?usage: stop DIR}"
    [ -f "$dir/pids" ] || { log "nothing to stop in $dir"; return 0; }
    local pids; pids="$(tac "$dir/pids")"
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $pids; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -f "$dir/pids"
    log "stopped"
}

case "${1:-}" in
    build) cmd_build ;;
    built) cmd_built ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
