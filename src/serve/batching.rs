//! The execution queue in front of a servable. With batching on, it behaves like TF Serving's
//! BasicBatchScheduler: tasks join the open batch until it is full or `batch_timeout_micros`
//! has passed since the batch opened; at most `max_enqueued_batches` batches wait (a full queue
//! refuses the task: UNAVAILABLE / HTTP 503); `num_batch_threads` threads run batches; a batch
//! is padded up to the next `allowed_batch_sizes` entry. With batching off, every task is its
//! own batch and the queue is unbounded, as in TF Serving without `--enable_batching`.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::config::BatchingParams;
use super::metrics::Metrics;
use super::model::Servable;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The queue is full (TF Serving: UNAVAILABLE "The batch scheduling queue … is full").
    #[error("the batch scheduling queue to which this task was submitted is full")]
    QueueFull,
    #[error("task size {rows} is larger than maximum input batch size {max}")]
    TooLarge { rows: usize, max: usize },
    #[error("{0}")]
    Internal(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The outputs of a submitted task: one part, or several when a large task was split.
pub struct Reply {
    parts: Vec<oneshot::Receiver<Result<Vec<f32>, ExecError>>>,
}

impl Reply {
    pub async fn wait(self) -> Result<Vec<f32>, ExecError> {
        let mut out = Vec::new();
        for part in self.parts {
            let rows = part
                .await
                .map_err(|_| ExecError::Internal("the batch thread dropped the task".into()))??;
            if out.is_empty() {
                out = rows;
            } else {
                out.extend_from_slice(&rows);
            }
        }
        Ok(out)
    }
}

struct Task {
    rows: usize,
    input: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>, ExecError>>,
    /// For `queuing_latency`: from here to the dequeue of its batch.
    enqueued: Instant,
}

struct Batch {
    tasks: Vec<Task>,
    rows: usize,
    opened: Instant,
}

struct Queue {
    batches: VecDeque<Batch>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    params: Option<BatchingParams>,
    servable: Arc<Servable>,
    metrics: Arc<Metrics>,
}

/// The queue and its threads for one servable.
pub struct Executor {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Executor {
    /// `params = None` means batching off; `threads` is then the number of worker threads.
    /// Fails when the OS refuses a thread (the count itself was bounded when it was read).
    pub fn start(
        servable: Arc<Servable>,
        params: Option<BatchingParams>,
        threads: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, std::io::Error> {
        let n = params
            .as_ref()
            .map(|p| p.num_batch_threads)
            .unwrap_or(threads)
            .max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                batches: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            params,
            servable,
            metrics,
        });
        let executor = Executor {
            shared,
            threads: Mutex::new(Vec::with_capacity(n)),
        };
        for i in 0..n {
            let s = executor.shared.clone();
            // On error, dropping `executor` stops and joins the threads already started.
            let handle = std::thread::Builder::new()
                .name(format!("batch-{i}"))
                .spawn(move || worker(s))?;
            executor
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle);
        }
        Ok(executor)
    }

    pub fn servable(&self) -> &Arc<Servable> {
        &self.shared.servable
    }

    /// Queues `rows` rows; the reply carries the output rows.
    pub fn submit(&self, rows: usize, mut input: Vec<f32>) -> Result<Reply, ExecError> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(ExecError::ShuttingDown);
        }
        let Some(p) = &self.shared.params else {
            let (tx, rx) = oneshot::channel();
            let task = Task {
                rows,
                input,
                reply: tx,
                enqueued: Instant::now(),
            };
            q.batches.push_back(Batch {
                rows,
                tasks: vec![task],
                opened: Instant::now(),
            });
            drop(q);
            self.shared.ready.notify_one();
            return Ok(Reply { parts: vec![rx] });
        };
        self.shared.metrics.input_batch(rows);
        let open_room = q
            .batches
            .back()
            .map(|b| p.max_batch_size.saturating_sub(b.rows))
            .unwrap_or(0);
        // The pieces this task becomes: whole, or (with large batch splitting, as TF Serving
        // does) the room left in the open batch and then batches of the execution size. Their
        // number is worked out before any is allocated: `rows` is the client's, and a queue
        // that cannot take them all refuses the task whole.
        let exec_size = p
            .max_execution_batch_size
            .unwrap_or(p.max_batch_size)
            .min(p.max_batch_size)
            .max(1);
        let whole =
            rows <= open_room || (rows <= p.max_batch_size && !p.enable_large_batch_splitting);
        if !whole && !p.enable_large_batch_splitting {
            return Err(ExecError::TooLarge {
                rows,
                max: p.max_batch_size,
            });
        }
        let first = if whole { rows } else { open_room.min(rows) };
        let new_batches = if whole {
            usize::from(rows > open_room)
        } else {
            (rows - first).div_ceil(exec_size)
        };
        if q.batches.len().saturating_add(new_batches) > p.max_enqueued_batches {
            return Err(ExecError::QueueFull);
        }
        let pieces: Vec<usize> = if whole {
            vec![rows]
        } else {
            let mut v = Vec::with_capacity(new_batches + 1);
            if first > 0 {
                v.push(first);
            }
            let mut left = rows - first;
            while left > 0 {
                v.push(exec_size.min(left));
                left -= exec_size.min(left);
            }
            v
        };
        let width = input.len().checked_div(rows).unwrap_or(0);
        let mut parts = Vec::with_capacity(pieces.len());
        let mut offset = 0;
        for (i, n) in pieces.iter().copied().enumerate() {
            let (tx, rx) = oneshot::channel();
            parts.push(rx);
            let chunk = if pieces.len() == 1 {
                std::mem::take(&mut input)
            } else {
                input[offset * width..(offset + n) * width].to_vec()
            };
            offset += n;
            let task = Task {
                rows: n,
                input: chunk,
                reply: tx,
                enqueued: Instant::now(),
            };
            let fits_open = i == 0 && n <= open_room;
            match q.batches.back_mut() {
                Some(b) if fits_open => {
                    b.rows += n;
                    b.tasks.push(task);
                }
                _ => q.batches.push_back(Batch {
                    rows: n,
                    tasks: vec![task],
                    opened: Instant::now(),
                }),
            }
        }
        drop(q);
        self.shared.ready.notify_all();
        Ok(Reply { parts })
    }

    /// Stops taking tasks, lets queued batches finish, and joins the threads.
    pub fn shutdown(&self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.closed = true;
        }
        self.shared.ready.notify_all();
        let handles: Vec<_> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes the front batch once it is ready: full, timed out, followed by a newer batch, or the
/// queue is closing. Returns None when closed and drained.
fn next_batch(s: &Shared) -> Option<Batch> {
    let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(front) = q.batches.front() {
            let ready_at = match &s.params {
                None => None,
                Some(p) => {
                    let full = front.rows >= p.max_batch_size;
                    if full || q.batches.len() > 1 || q.closed {
                        None
                    } else {
                        Some(front.opened + Duration::from_micros(p.batch_timeout_micros))
                    }
                }
            };
            match ready_at {
                None => return q.batches.pop_front(),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return q.batches.pop_front();
                    }
                    q = s
                        .ready
                        .wait_timeout(q, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        } else if q.closed {
            return None;
        } else {
            q = s.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn padded_size(params: Option<&BatchingParams>, rows: usize) -> usize {
    params
        .and_then(|p| p.allowed_batch_sizes.iter().copied().find(|a| *a >= rows))
        .unwrap_or(rows)
}

fn worker(s: Arc<Shared>) {
    let in_width = s.servable.signature.row_width();
    let out_width = s.servable.signature.output_row_width();
    while let Some(batch) = next_batch(&s) {
        // Wake another thread: the next batch may already be waiting.
        s.ready.notify_one();
        let padded = padded_size(s.params.as_ref(), batch.rows);
        // What TF Serving's batching session records; without batching there is none.
        if s.params.is_some() {
            let dequeued = Instant::now();
            for t in &batch.tasks {
                s.metrics
                    .queued(dequeued.saturating_duration_since(t.enqueued).as_micros() as u64);
            }
            s.metrics.batch(batch.rows, padded);
        }
        let result = if batch.tasks.len() == 1 && padded == batch.rows {
            let mut tasks = batch.tasks;
            let task = tasks.pop().map(|t| (t.rows, t.input, t.reply));
            if let Some((rows, input, reply)) = task {
                let out = s.servable.run(rows, input).map_err(ExecError::Internal);
                if s.params.is_some() {
                    s.metrics.wrapped_run();
                }
                let _ = reply.send(out);
            }
            continue;
        } else {
            let mut input = Vec::with_capacity(padded * in_width);
            for t in &batch.tasks {
                input.extend_from_slice(&t.input);
            }
            input.resize(padded * in_width, 0.0);
            let out = s.servable.run(padded, input);
            if s.params.is_some() {
                s.metrics.wrapped_run();
            }
            out
        };
        match result {
            Ok(out) => {
                let mut offset = 0;
                for t in batch.tasks {
                    let n = t.rows * out_width;
                    let part = out.get(offset..offset + n).map(|p| p.to_vec());
                    offset += n;
                    let _ = t.reply.send(part.ok_or_else(|| {
                        ExecError::Internal(
                            "the model returned fewer rows than it was given".into(),
                        )
                    }));
                }
            }
            Err(e) => {
                for t in batch.tasks {
                    let _ = t.reply.send(Err(ExecError::Internal(e.clone())));
                }
            }
        }
    }
}
