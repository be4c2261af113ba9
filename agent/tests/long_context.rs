//! Long context on CPU: forward + backward of ReLIC's tiny model (2 layers, width 64,
//! 8 heads) over ONE 65,536-token sequence, with memory far below a quadratic attention
//! matrix (65536^2 x 4 bytes = 16 GiB). Takes minutes on 2 cores, hence ignored:
//! `cargo test -p agent --release --test long_context -- --ignored --nocapture`.

use agent::{bench_model, BenchModelOptions};

#[test]
#[ignore = "minutes on CPU; run by hand"]
fn forward_backward_over_64k_tokens_stays_far_below_quadratic_memory() {
    let opts = BenchModelOptions {
        context: 65_536,
        batch: 1,
        train_warmup: 0,
        train_iters: 1,
        decode_steps: 32,
        ..BenchModelOptions::default()
    };
    let report = bench_model(&opts).unwrap();
    println!("{report}");
    let peak = report["train_peak_bytes"]
        .as_u64()
        .expect("VmHWM readable on Linux");
    let quadratic = 65_536u64 * 65_536 * 4;
    assert!(
        peak < quadratic / 4,
        "peak {peak} bytes is not far below {quadratic}"
    );
}
