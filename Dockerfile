# omi's container image (README: "Deploying").
#   docker build -t omi .                      # compiles omi in the Rust image, runs on Debian slim
#   docker run -p 8080:8080 -v omi-data:/data -e OPENAI_API_KEY=sk-… omi
# scripts/container-test builds the `prebuilt` target instead: a context directory holding only
# an `omi` binary built by cargo on a Debian bookworm host (no Rust image needed).
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# --locked: exactly the Cargo.lock versions; the cache mounts keep crates and objects between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin omi && install -m 0755 target/release/omi /usr/local/bin/omi

# What every variant of the image shares: CA certificates (outbound TLS reads the system's
# store), a non-root user and the /data volume. Nothing else: no shell tools are added.
FROM ${RUN_IMAGE} AS runtime-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin omi \
    && mkdir -p /data && chown omi:omi /data
# PORT alone binds 0.0.0.0:PORT (Render/Railway set it); SQLite lives on the volume.
ENV PORT=8080 \
    DATABASE_URL=sqlite:///data/omi.db
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
USER omi
# The slim base has no curl or wget; bash (essential in Debian) speaks HTTP/1.1 over /dev/tcp.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-8080} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["omi"]
CMD ["serve"]

# For tests only (`--target prebuilt`): the binary from the build context.
FROM runtime-base AS prebuilt
COPY --chmod=0755 omi /usr/local/bin/omi

# The default image: the binary compiled in the build stage.
FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/omi /usr/local/bin/omi
