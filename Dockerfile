# syntax=docker/dockerfile:1
#
# tidewire as a container: a static (musl) release binary on distroless, non-root.
#   docker build -t tidewire .
#   docker run -p 7999:7999 -e TIDEWIRE_JWT_SECRET=… tidewire                    # the gateway
#   docker run -p 7999:7999 --entrypoint /usr/local/bin/tidewire-desk tidewire \
#     --web-dir /srv/web --listen 0.0.0.0:7999                                    # the demo
# Configuration comes only from TIDEWIRE_* variables and flags; logs are JSON on stdout.
# `cargo xtask test` builds the same release target and runs its healthcheck against a
# live server (no Docker engine is needed for that).

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl wasm32-unknown-unknown
WORKDIR /src
COPY . .
# The dashboard (wasm client package + esbuild bundle), then the static binary.
RUN cargo xtask web \
 && CC_x86_64_unknown_linux_musl=musl-gcc CC=musl-gcc HOST_CC=gcc cargo build --release --locked --target x86_64-unknown-linux-musl \
      -p tidewire-server --bin tidewire -p tidewire-desk --bin tidewire-desk

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/tidewire /usr/local/bin/tidewire
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/tidewire-desk /usr/local/bin/tidewire-desk
COPY --from=build /src/web/dist /srv/web
ENV TIDEWIRE_LISTEN=0.0.0.0:7999 \
    TIDEWIRE_LOG_FORMAT=json
USER nonroot:nonroot
EXPOSE 7999
# Minimal images have no curl: the binary checks itself (GET /health on 127.0.0.1:7999).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/tidewire", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tidewire"]
CMD ["serve"]
