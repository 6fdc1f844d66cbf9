# syntax=docker/dockerfile:1
# Portcullis: a small, non-root image holding one binary (linked against glibc only).
#
#   docker build -t REGISTRY/portcullis:0.1.0 .
#
# Build stage: the workspace's toolchain; ring needs a C compiler, which this image has.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p portcullis --bin portcullis \
    && install -D -m 0755 target/release/portcullis /out/portcullis

# Run stage: glibc and CA certificates, no shell, no package manager; user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis /usr/local/bin/portcullis
USER 65532:65532
# HTTP, HTTPS, admin (/healthz, /readyz, /config). All above 1024: no capability needed.
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run"]
