# syntax=docker/dockerfile:1
#
# Shellac in a container.
#
#   docker build -t shellac .
#   docker run --rm -p 6081:6081 \
#     -v "$PWD/my-shellac.toml:/etc/shellac/shellac.toml:ro" shellac
#
# The image carries config/shellac.toml, which listens on 127.0.0.1:6081 and
# fetches from 127.0.0.1:8080: fine on a laptop, unreachable in a container.
# Mount your own file at /etc/shellac/shellac.toml with
#
#   [server]
#   listen = "0.0.0.0:6081"        # not 127.0.0.1: the published port must reach it
#
# and a [[backend]] address the container can reach (a compose service name,
# host.docker.internal, ...). Host names resolve once, when Shellac starts.
# Validate a file without starting anything:
#
#   docker run --rm -v "$PWD/my-shellac.toml:/etc/shellac/shellac.toml:ro" \
#     shellac --check --config /etc/shellac/shellac.toml
#
# On `docker stop` Shellac drains for up to [server] drain_timeout (30 s by
# default) but Docker kills after 10 s: use `docker stop -t 35` to let it finish.

# === build ===
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between
# builds; the binary is copied out of target/ because the mount is not part
# of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/shellac /usr/local/bin/shellac

# === runtime ===
FROM debian:bookworm-slim
RUN useradd --system --no-create-home --shell /usr/sbin/nologin shellac
COPY --from=build /usr/local/bin/shellac /usr/local/bin/shellac
COPY config/shellac.toml /etc/shellac/shellac.toml
USER shellac
EXPOSE 6081
ENTRYPOINT ["shellac"]
CMD ["--config", "/etc/shellac/shellac.toml"]
