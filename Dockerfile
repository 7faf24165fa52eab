# Build: docker build -t glusterfs-provisioner .   (or: buildah bud -t glusterfs-provisioner .)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benchmark; cargo wants its file present even when building the binary.
COPY benches ./benches
COPY build.rs ./
COPY proto ./proto
# The image ships a stripped binary; its symbols and line tables (for crash reports) stay in
# this stage: `docker build --target symbols -o .` writes glusterfs-provisioner.debug.
RUN cargo build --release --locked --bin glusterfs-provisioner \
    && cd target/release \
    && objcopy --only-keep-debug glusterfs-provisioner glusterfs-provisioner.debug \
    && objcopy --strip-all --add-gnu-debuglink=glusterfs-provisioner.debug glusterfs-provisioner

FROM scratch AS symbols
COPY --from=build /src/target/release/glusterfs-provisioner.debug /

FROM debian:bookworm-slim AS runtime
# ssh is the transport to the gluster nodes (one multiplexed connection per node). OpenSSH
# refuses to run as a uid without a passwd entry, so the non-root user is a real one. The
# GlusterFS client (mount.glusterfs) is for the CSI node plugin (`node`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client ca-certificates glusterfs-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 provisioner \
    && useradd --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin provisioner
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/glusterfs-provisioner"]
CMD ["run"]

# The e2e environment's image: the runtime above around the binary the test command built
# (`buildah bud --target prebuilt` with it at target/glusterfs-provisioner in the context).
FROM runtime AS prebuilt
COPY target/glusterfs-provisioner /usr/local/bin/glusterfs-provisioner

FROM runtime
COPY --from=build /src/target/release/glusterfs-provisioner /usr/local/bin/glusterfs-provisioner
