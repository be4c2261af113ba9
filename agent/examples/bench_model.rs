//! `cargo run -p agent --release --example bench_model -- --context 8192 [--batch B]
//! [--layers L] [--d-model D] [--heads H] [--device cpu|cuda] [--warmup N] [--iters N]
//! [--decode-steps N]`: prints `agent::bench_model`'s JSON object on its last line.

use agent::{bench_model, BenchModelOptions};

fn main() -> anyhow::Result<()> {
    let mut opts = BenchModelOptions::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            anyhow::bail!("flag {:?} needs a value", pair[0])
        };
        let n = || {
            value
                .parse::<usize>()
                .map_err(|e| anyhow::anyhow!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--context" => opts.context = n()?,
            "--batch" => opts.batch = n()?,
            "--layers" => opts.layers = n()?,
            "--d-model" => opts.d_model = n()?,
            "--heads" => opts.heads = n()?,
            "--warmup" => opts.train_warmup = n()?,
            "--iters" => opts.train_iters = n()?,
            "--decode-steps" => opts.decode_steps = n()?,
            "--device" => opts.device = value.clone(),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    println!("{}", bench_model(&opts)?);
    Ok(())
}
