# The load-generator image: this repository's benchstack binary, run as `benchstack worker`
# in each pod of a load test's Indexed Job.
#
#   docker build -f deploy/loadgen.Dockerfile -t gcr.io/PROJECT/benchstack:latest .
#   docker push gcr.io/PROJECT/benchstack:latest
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin benchstack

FROM debian:bookworm-slim
COPY --from=build /src/target/release/benchstack /usr/local/bin/benchstack
COPY examples /opt/benchstack/examples
ENTRYPOINT ["/usr/local/bin/benchstack"]
