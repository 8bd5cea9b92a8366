# syntax=docker/dockerfile:1
#
# Two images, one runtime stage each:
#
#   docker build --target sidecar  -t REGISTRY/attache-sidecar:TAG  .   # goes into every pod
#   docker build --target operator -t REGISTRY/attache-operator:TAG .
#
# Both binaries are static (musl), so a runtime stage is the binary and an empty /tmp (the
# demo's scratch space) on top of RUNTIME_BASE: distroless/static by default (CA certificates,
# /etc/passwd, no shell, no package manager); `--build-arg RUNTIME_BASE=scratch` gives the same
# image on an empty base. Both run as the non-root UID 65532 and write nothing outside /tmp,
# so they run with readOnlyRootFilesystem: true.
#
# BINARIES=build (the default) compiles in the `build` stage below. BINARIES=prebuilt takes
# the binaries from the build context instead (bin/attache-sidecar, bin/attache-operator,
# stripped, and rootfs/tmp with mode 1777), so CI packs binaries it built and checked itself
# with these same runtime stages (scripts/ci-images.sh).

ARG RUNTIME_BASE=gcr.io/distroless/static-debian12:nonroot
ARG BINARIES=build

# --- build: static release binaries ---
FROM rust:1.95-alpine AS build
# gcc and musl-dev: ring's C and assembly, and the static link; their versions are the ones
# of the base image's Alpine release.
# hadolint ignore=DL3018
RUN apk add --no-cache gcc musl-dev
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
# The whole workspace (see .dockerignore): every member must be present for cargo to load it.
# The sidecar's default features include `demo`: `attache-sidecar demo` runs inside the image.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p attache-sidecar -p attache-operator \
 && mkdir -p /out/bin /out/rootfs/tmp \
 && chmod 1777 /out/rootfs/tmp \
 && cp target/release/attache-sidecar target/release/attache-operator /out/bin/ \
 && strip /out/bin/attache-sidecar /out/bin/attache-operator

# --- prebuilt: the same layout from the build context ---
FROM scratch AS prebuilt
COPY bin/ /out/bin/
COPY rootfs/ /out/rootfs/

FROM ${BINARIES} AS binaries

# --- operator: controller, admission webhook and offline CLI ---
FROM ${RUNTIME_BASE} AS operator
LABEL org.opencontainers.image.title="attache-operator" \
      org.opencontainers.image.description="Attaché operator: controller, admission webhook and offline CLI" \
      org.opencontainers.image.source="https://github.com/attache-dev/attache" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin
COPY --from=binaries /out/rootfs/ /
COPY --from=binaries /out/bin/attache-operator /usr/local/bin/attache-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/attache-operator"]
CMD ["run"]

# --- sidecar: the egress proxy injected into pods (the default target) ---
FROM ${RUNTIME_BASE} AS sidecar
LABEL org.opencontainers.image.title="attache-sidecar" \
      org.opencontainers.image.description="Attaché egress sidecar: TLS origination, credentials and resilience for third-party APIs" \
      org.opencontainers.image.source="https://github.com/attache-dev/attache" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin
COPY --from=binaries /out/rootfs/ /
COPY --from=binaries /out/bin/attache-sidecar /usr/local/bin/attache-sidecar
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/attache-sidecar"]
CMD ["--help"]
