# syntax=docker/dockerfile:1
# cloudproxy: one image for every role (`relay`, `control`, `media`, `admin`, …).
#
#   docker build -t cloudproxy .
#   docker run --rm cloudproxy --help
#
# compose.yaml runs PostgreSQL, the control plane and two relays from it. The image runs as
# the unprivileged user `cloudproxy` (uid 10001); the binary carries the file capability
# CAP_NET_BIND_SERVICE so that this user can bind port 443, and nothing else. A container
# started with `--cap-drop ALL` must add that one back (`--cap-add NET_BIND_SERVICE`), or
# the kernel refuses to run a binary whose capability the container may not have.

# --- build: the release binary (28.4 MB: symbols, no debug sections; see README "Release build")
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cloudproxy \
    && install -D -m 0755 target/release/cloudproxy /out/cloudproxy

# --- run: Debian slim, the binary, a user
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cloudproxy \
    && useradd --system --uid 10001 --gid cloudproxy --home-dir /var/lib/cloudproxy \
       --create-home --shell /usr/sbin/nologin cloudproxy \
    && chmod 0700 /var/lib/cloudproxy
COPY --from=build /out/cloudproxy /usr/local/bin/cloudproxy
RUN setcap cap_net_bind_service=+ep /usr/local/bin/cloudproxy \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y
USER cloudproxy:cloudproxy
WORKDIR /var/lib/cloudproxy
# TURN (UDP and TCP), TURN over TLS, the relay's metrics, the control plane's API.
EXPOSE 3478/udp 3478/tcp 443/tcp 9478/tcp 8480/tcp
ENTRYPOINT ["/usr/local/bin/cloudproxy"]
CMD ["--help"]
