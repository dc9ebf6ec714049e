//! The open-loop load generator: arrival schedules, REST and gRPC clients, latency recording,
//! stages, capacity search and distributed workers.

pub mod spec;
