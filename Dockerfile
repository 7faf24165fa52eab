# Build: docker build -t glusterfs-provisioner .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benchmark; cargo wants its file present even when building the binary.
COPY benches ./benches
RUN cargo build --release --locked --bin glusterfs-provisioner

FROM debian:bookworm-slim
# ssh is the transport to the gluster nodes (one multiplexed connection per node).
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/glusterfs-provisioner /usr/local/bin/glusterfs-provisioner
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/glusterfs-provisioner"]
CMD ["run"]
