# syntax=docker/dockerfile:1
#
# docker build -t kubevirt-reboot-webhook:latest .
#
# Builder: the official Rust image (Debian 12 "bookworm", with gcc for ring).
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit);
# the binary is copied out because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kubevirt-reboot-webhook \
 && install -D -m 0755 target/release/kubevirt-reboot-webhook /out/kubevirt-reboot-webhook

# Runtime: glibc + libgcc only, no shell, Debian 12 like the builder.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/kubevirt-reboot-webhook /usr/local/bin/kubevirt-reboot-webhook
# 65532 = "nonroot" in distroless; numeric so runAsNonRoot can verify it.
USER 65532:65532
# 8443: HTTPS admission (/validate, /mutate); 8080: /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/kubevirt-reboot-webhook"]
CMD ["serve"]
