# syntax=docker/dockerfile:1
# Both Rust programs of the stack, from one builder stage, into two distroless images (no shell,
# non-root). docker-compose.yml picks the final stage with `build.target`; by hand:
#   docker build --target sample-app -t four-signal/sample-app:0.1.0 .
#   docker build --target load-gen   -t four-signal/load-gen:0.1.0 .
# Needs BuildKit (the default builder of Docker Engine 23+ and Docker Desktop): cache mounts.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
# make: tikv-jemalloc-sys builds jemalloc (with its heap profiler) from source; the slim image
# has gcc but not make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what cargo needs: the workspace manifest and lockfile, and every workspace member (cargo
# loads them all, even to build two). .dockerignore keeps everything else out of the context.
COPY Cargo.toml Cargo.lock ./
# Build-time environment: jemalloc's profiling options (sample-app's heap profiles).
COPY .cargo .cargo
COPY crates crates
COPY sample-app sample-app
COPY load-gen load-gen
COPY tools/query-check tools/query-check
# What `load-gen verify` checks the running stack against, read at build time
# (crates/stack-verify/build.rs): Grafana's provisioning and dashboards, the rule groups, the
# query catalogs, the contract's profile types.
COPY grafana/provisioning grafana/provisioning
COPY grafana/dashboards grafana/dashboards
COPY prometheus/rules prometheus/rules
COPY loki/rules loki/rules
COPY queries queries
COPY docs/contracts.md docs/contracts.md
# One cargo invocation for both binaries: the dependencies they share are resolved once (one
# feature set) and compiled once. The crate registry and the target directory live in BuildKit
# cache mounts, which outlive the layer: after a source change the next build recompiles only
# the crates that changed. The binaries are copied out of the cache mount into the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p sample-app -p load-gen \
    && install -D -t /out target/release/sample-app target/release/load-gen

# The sample service. cc: glibc and libgcc, which the binary and its profiler's unwinder need.
FROM gcr.io/distroless/cc-debian12:nonroot AS sample-app
COPY --from=builder /out/sample-app /usr/local/bin/sample-app
# Listen on every interface inside the container; compose publishes it on 127.0.0.1 only.
ENV SAMPLE_APP_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER nonroot:nonroot
# Exec form and the binary itself: distroless has no shell and no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/sample-app", "--check-health"]
ENTRYPOINT ["/usr/local/bin/sample-app"]

# The load generator and scenario runner (also alert-log, Alertmanager's offline receiver).
# No HEALTHCHECK here: what to probe depends on the command (compose gives each its own,
# `load-gen check URL`, the binary again).
FROM gcr.io/distroless/cc-debian12:nonroot AS load-gen
COPY --from=builder /out/load-gen /usr/local/bin/load-gen
# The scenarios ship in the image; mount a directory over this path to use your own.
COPY load-gen/scenarios /etc/load-gen/scenarios
ENV LOADGEN_SCENARIO_DIR=/etc/load-gen/scenarios
# Where `load-gen history` writes (compose mounts the history-data volume here): owned by
# nonroot, which Docker copies onto a new volume along with the directory's file.
COPY --chown=65532:65532 load-gen/history-volume /var/lib/load-gen/history
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/load-gen"]
# The stack's background traffic; compose overrides the target and adds --metrics-listen.
CMD ["scenario", "run", "baseline", "--repeat"]
