//! Numeric limits shared by the stack language (its ranges), the load generator and the
//! stand-in server, so that a value the language accepts is one the executors accept.

// Bounds on counts read from files and flags. TF Serving's tuned values are far below them
// (8000 rows, 4 threads, 100 queued batches, microseconds of timeout); they exist so that a
// typo or a hostile file is a config error at startup, not a billion threads or an
// allocation of terabytes.
/// Most batch threads per servable (`num_batch_threads`) and most inference or front-end threads.
pub const MAX_THREADS: usize = 1024;
/// Most rows per batch (`max_batch_size`, `max_execution_batch_size`, `allowed_batch_sizes`).
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Most batches waiting (`max_enqueued_batches`).
pub const MAX_ENQUEUED_BATCHES: usize = 1_000_000;
/// Longest `batch_timeout_micros`: a minute (a batch that waits longer is surely a typo).
pub const MAX_BATCH_TIMEOUT_MICROS: u64 = 60_000_000;
/// At most this many load-generator connections (each is a task and a socket).
pub const MAX_CONNECTIONS: u32 = 100_000;
