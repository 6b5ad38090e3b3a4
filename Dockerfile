# One image with all six service binaries (order, stock, payment, shipping,
# email, loyalty) and the console; which one runs is the container's command:
#
#   docker build -t ordermesh .                     # what docker-compose.yml does
#   docker run --rm ordermesh stock                 # pick the binary per container
#   docker build --build-arg SERVICE=stock --build-arg PORT=8081 -t ordermesh-stock .
#                                                   # or bake the default in
#
# Uses no BuildKit-only syntax, so the classic builder (docker-compose v1's)
# builds it too.
#
# Stages:
#   toolchain  Rust + the C toolchain that rdkafka-sys needs
#   planner    reduces the source tree to a "skeleton" (manifests + stubs)
#   builder    builds the dependencies from the skeleton (cached layer), then
#              the real sources
#   runtime    debian:bookworm-slim, the six binaries, a health probe, non-root

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS toolchain
# rdkafka-sys (default features: libz only, no SSL, no SASL, no zstd, no curl)
# builds librdkafka from its bundled source with librdkafka's own ./configure
# (bash) and make, not CMake: so a C/C++ compiler and make (build-essential),
# and zlib found through pkg-config (libz-sys then links the system libz
# dynamically). No OpenSSL: nothing in the services' dependency tree uses it
# (`cargo tree -i openssl-sys` finds nothing). python3 is optional: without
# it librdkafka's configure only skips the linker script of its shared
# library, which is not used here. The rust image has most of this already;
# listing it keeps the build honest if the base image changes. Versions are
# not pinned: the Debian release is, and its point releases replace old ones.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS planner
# pipefail: a failing `find` must fail the build, not feed an empty skeleton.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# The dependency cache, done by hand (what cargo-chef does, without the tool):
# /skeleton gets the workspace manifest, Cargo.lock, .cargo/config.toml and,
# for every package of the workspace (services, shared crates, and also
# xtask, tests, tests/containers, load-tests: `cargo build -p order-service`
# has to load the whole workspace, so every member's manifest and targets
# must exist), its Cargo.toml plus an empty stand-in for each file cargo
# treats as a target root: src/main.rs, src/lib.rs, build.rs, and tests/,
# benches/, examples/, src/bin/ entries. The skeleton's content changes only
# when a manifest, the lock file, or the set of target files changes, so
# Docker's cache keeps the expensive layer below (all of crates.io that the
# services use, librdkafka included) across ordinary source edits.
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    if [ -d .cargo ]; then cp -r .cargo /skeleton/; fi; \
    find . -name Cargo.toml -not -path ./Cargo.toml -not -path '*/target/*' | while read -r manifest; do \
        dir=$(dirname "$manifest"); \
        mkdir -p "/skeleton/$dir/src"; \
        cp "$manifest" "/skeleton/$dir/"; \
        echo 'fn main() {}' > "/skeleton/$dir/src/main.rs"; \
        : > "/skeleton/$dir/src/lib.rs"; \
        for target in "$dir"/build.rs "$dir"/tests/*.rs "$dir"/tests/*/main.rs "$dir"/benches/*.rs \
                      "$dir"/examples/*.rs "$dir"/src/bin/*.rs "$dir"/src/bin/*/main.rs; do \
            [ -f "$target" ] || continue; \
            mkdir -p "/skeleton/$(dirname "$target")"; \
            echo 'fn main() {}' > "/skeleton/$target"; \
        done; \
    done

# ---------------------------------------------------------------------------
FROM toolchain AS builder
ARG PACKAGES="-p order-service -p stock-service -p payment-service -p shipping-service -p email-service -p loyalty-service -p console"
ARG BINARIES="order stock payment shipping email loyalty console"
# --no-default-features: no crash points, no unsafe modes in an image (the
# services' default feature `fault-injection` is for the tests only).
# 1. Dependencies only, against the stubs (the cached layer). The stubs are
#    removed again (target/ stays) so none of them outlives step 2.
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked --no-default-features $PACKAGES \
 && find . -mindepth 1 -maxdepth 1 -not -name target -exec rm -rf {} +
# 2. The real sources. COPY keeps the files' original modification times,
#    which can be older than the stub artifacts of step 1, and cargo would
#    then think the workspace crates are up to date and ship the stubs: so
#    touch every source file first. Migrations are embedded by
#    sqlx::migrate! at compile time, so they come with this COPY too.
COPY . .
RUN set -eu; \
    find . -path ./target -prune -o -name '*.rs' -exec touch {} +; \
    cargo build --release --locked --no-default-features $PACKAGES; \
    mkdir -p /out; \
    for binary in $BINARIES; do \
        install -m 0755 "target/release/$binary" /out/; \
        strip --strip-debug "/out/$binary"; \
    done

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# What the binaries link (ldd): libc, libm, libgcc_s, libz. zlib1g is in the
# slim image already and listed to say so; ca-certificates is for an HTTPS
# OTLP endpoint or SMTP relay. libssl3 is deliberately absent: no OpenSSL is
# linked (add it if a TLS feature backed by native-tls/openssl is turned on).
# The health probe: bash + /dev/tcp, GET /health/ready on HTTP_ADDR's port,
# healthy only on 200 (so the image needs no curl). chmod here, because a
# checkout may have lost the file's executable bit.
COPY deploy/healthcheck.sh /usr/local/bin/healthcheck
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && chmod 0755 /usr/local/bin/healthcheck \
 && groupadd --system --gid 10001 ordermesh \
 && useradd --system --uid 10001 --gid ordermesh --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin ordermesh
COPY --from=builder /out/ /usr/local/bin/

# The binary a container runs when no command is given, and its port. The
# services default to 127.0.0.1, unreachable from outside a container, so
# the image listens on all interfaces; docker-compose.yml sets both anyway.
ARG SERVICE=order
ARG PORT=8080
ENV SERVICE=${SERVICE} \
    HTTP_ADDR=0.0.0.0:${PORT} \
    LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE ${PORT}

USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["healthcheck"]
# exec: the service itself is PID 1 and gets SIGTERM directly (it handles it:
# graceful shutdown within SHUTDOWN_DEADLINE_SECS).
CMD ["/bin/sh", "-c", "exec \"/usr/local/bin/$SERVICE\""]
