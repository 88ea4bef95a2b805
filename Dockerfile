# syntax=docker/dockerfile:1
#
# notifyd container image: the daemon in /usr/bin, every Rust provider plugin in
# /usr/lib/notifyd/plugins, the sandbox configuration of deploy/docker/notifyd.toml in /etc/notifyd.
#
#   docker build -t notifyd .
#   docker run --rm -p 9464:9464 -e NOTIFYD_NATS__URL=nats://host.docker.internal:4222 notifyd
#   docker run --rm notifyd check-config         # or: plugins, send ..., plugin verify FILE
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# The cargo profile: `dist` (default) has no debug info (panics still name functions); `release`
# keeps line tables, for file:line in backtraces and for profiling. Either builds the default
# members only: the daemon and the Rust plugins, not the bench or the test kit.
ARG PROFILE=dist
WORKDIR /src
COPY . .
# The registry caches speed up rebuilds; target/ is not cached, so no stale plugin of an earlier
# build can end up in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --profile "$PROFILE" --locked \
 && target/"$PROFILE"/notifyd check-config --config deploy/docker/notifyd.toml \
 && install -D -m 0755 target/"$PROFILE"/notifyd /out/usr/bin/notifyd \
 && install -d /out/usr/lib/notifyd/plugins \
 && install -m 0644 target/"$PROFILE"/libnotifyd_*.so /out/usr/lib/notifyd/plugins/ \
 && install -D -m 0644 deploy/docker/notifyd.toml /out/etc/notifyd/notifyd.toml

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# ca-certificates: provider HTTPS is verified against the system trust store.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 notifyd \
 && useradd --system --uid 10001 --gid notifyd --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin notifyd

COPY --from=builder /out/ /

LABEL org.opencontainers.image.title="notifyd" \
      org.opencontainers.image.description="SMS notification daemon: NATS JetStream in, provider plugins out, Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric user, so that Kubernetes can verify runAsNonRoot. notifyd writes no files: the root
# file system may be read-only.
USER 10001:10001
WORKDIR /
# 9464: /metrics, /healthz, /readyz ([metrics] listen); 9465: provider delivery callbacks
# ([callbacks] listen).
EXPOSE 9464 9465
# SIGTERM drains: stop fetching, finish or hand back in-flight work within shutdown.grace (20s),
# exit 0. Give `docker stop` more than that: `docker stop -t 30`, compose stop_grace_period: 30s.
STOPSIGNAL SIGTERM
# Liveness through /healthz without curl in the image: bash's /dev/tcp.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/bin/notifyd"]
CMD ["run", "--config", "/etc/notifyd/notifyd.toml", "--log-format", "json"]
