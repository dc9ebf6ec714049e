//! How long `stack::load` takes for a large sweep: a serving block with N for_each instances
//! and a loadtest block with `for_each = serving.tf` (so 2N + 2 resources).
//!
//!   CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo bench --profile dev --bench stack_load
//!   (or plain `cargo bench --bench stack_load` for a release build)
//!
//! Prints the median and minimum of several loads for a few sizes; results in bench/README.md.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use benchstack::stack::{VarInputs, load_with_env};

fn stack_text(n: usize, model_dir: &str, data: &str) -> String {
    let mut s = String::new();
    s.push_str("variable \"sweep\" {\n  default = {\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "    c{i:04} = {{ max_batch_size = {}, batch_timeout_micros = {} }}",
            1 + i % 64,
            (i * 37) % 5000
        );
    }
    s.push_str("  }\n}\n\n");
    s.push_str("cluster \"local\" {}\n\n");
    let _ = writeln!(s, "model \"m\" {{\n  base_path = {model_dir:?}\n}}\n");
    s.push_str(
        r#"serving "tf" {
  for_each = var.sweep
  cluster  = cluster.local
  models   = [model.m]
  flags = {
    tensorflow_intra_op_parallelism = 2
  }
  batching {
    max_batch_size       = each.value.max_batch_size
    batch_timeout_micros = each.value.batch_timeout_micros
    num_batch_threads    = 2
  }
}

loadtest "lt" {
  for_each = serving.tf
  target   = each.value
  protocol = "grpc"
"#,
    );
    let _ = writeln!(s, "  data     = {data:?}");
    s.push_str(
        r#"  stage {
    rate     = 300
    duration = "10s"
  }
  stage {
    rate     = 3900
    duration = "10s"
  }
  slo { p99 = "50ms" }
}
"#,
    );
    s
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("tests/fixtures/model/regression");
    let data = root.join("tests/fixtures/data.csv");
    let dir = std::env::temp_dir().join(format!("benchstack-stack-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("stack::load of a for_each sweep (serving × N, loadtest × N)");
    println!(
        "{:>6} {:>10} {:>12} {:>12}",
        "N", "resources", "median", "min"
    );
    for n in [10usize, 100, 1000] {
        let path = dir.join(format!("sweep-{n}.hcl"));
        std::fs::write(
            &path,
            stack_text(n, &model.display().to_string(), &data.display().to_string()),
        )
        .expect("write stack");
        let runs = if n >= 1000 { 11 } else { 21 };
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        let mut resources = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let stack = load_with_env(&path, &VarInputs::default(), &[])
                .unwrap_or_else(|d| panic!("the generated stack is valid: {d}"));
            times.push(t.elapsed());
            resources = stack.resources.len();
        }
        times.sort();
        println!(
            "{n:>6} {resources:>10} {:>12.2?} {:>12.2?}",
            times[runs / 2],
            times[0]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
