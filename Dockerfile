# anykv's image: one `anykv` binary on slim Debian (docs/DEPLOY.md).
# The build stage runs scripts/build-release.sh (cargo build --release
# --locked); the runtime stage runs `anykv node` as a non-root user with
# its data on the volume mounted at /data. Fly mounts volumes owned by
# root: the entrypoint (scripts/docker-entrypoint.sh) starts as root, gives
# /data to the user, and drops to it before anykv runs.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# (The C helpers of the dependencies need a compiler: the rust image has it.)
COPY . .
RUN scripts/build-release.sh

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin anykv \
    && mkdir -p /data \
    && chown anykv:anykv /data
COPY --from=build /src/dist/anykv /usr/local/bin/anykv
COPY scripts/docker-entrypoint.sh /usr/local/bin/anykv-entrypoint
WORKDIR /data
VOLUME /data
# RESP (Flycast and 6PN), metrics/admin; gossip, QUIC sync and the region
# pool reach peers over 6PN only.
EXPOSE 6379/tcp 9091/tcp 7946/udp 7947/udp 7948/udp
# A node stopped with SIGTERM hands its primaries to their standbys first.
STOPSIGNAL SIGTERM
ENTRYPOINT ["anykv-entrypoint", "anykv", "node"]
# Store arguments after `--`: RESP on IPv4 and IPv6 (Flycast needs
# 0.0.0.0), files on the volume, metrics and the admin API on 9091.
CMD ["--", "--bind", "0.0.0.0", "::", "--port", "6379", "--dir", "/data", "--metrics-addr", "[::]:9091"]
