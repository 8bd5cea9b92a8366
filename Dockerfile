# One image, both binaries: attache-operator and attache-sidecar.
#
#   docker build -t ghcr.io/attache-dev/attache:dev .
#
# Stage 1 builds the dependency graph alone (cached until Cargo.toml/Cargo.lock change), stage 2
# builds our crates, the final stage is distroless (glibc, no shell, no package manager) running
# as the non-root user 65532.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0

# --- dependencies only: manifests plus empty crate roots ---
COPY Cargo.toml Cargo.lock ./
COPY api/Cargo.toml api/Cargo.toml
COPY sidecar/Cargo.toml sidecar/Cargo.toml
COPY operator/Cargo.toml operator/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
RUN for c in api sidecar operator tests; do mkdir -p $c/src && echo '' > $c/src/lib.rs; done \
 && echo 'fn main() {}' > sidecar/src/main.rs \
 && echo 'fn main() {}' > operator/src/main.rs \
 && cargo build --release --locked -p attache-sidecar -p attache-operator \
 && rm -rf api/src sidecar/src operator/src tests/src

# --- our crates ---
COPY api api
COPY sidecar sidecar
COPY operator operator
COPY tests tests
COPY examples examples
COPY crds crds
# Make sure cargo sees the real sources as newer than the cached placeholders.
RUN touch api/src/lib.rs sidecar/src/lib.rs sidecar/src/main.rs operator/src/lib.rs operator/src/main.rs \
 && cargo build --release --locked -p attache-sidecar -p attache-operator \
 && install -D -m 0755 target/release/attache-sidecar /out/attache-sidecar \
 && install -D -m 0755 target/release/attache-operator /out/attache-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="attache" \
      org.opencontainers.image.description="Attaché operator and egress sidecar" \
      org.opencontainers.image.source="https://github.com/attache-dev/attache" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# The sidecar is the default; the operator's Deployment sets `command: [attache-operator, run]`.
ENTRYPOINT ["/usr/local/bin/attache-sidecar"]
CMD ["--help"]
