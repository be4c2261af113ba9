//! `cargo run --release -p sampler --example bench_sampler -- [ENVS] [THREADS] [random|model] [sync|double] [STEPS] [ENV]`:
//! the sampler benchmark until `icrl bench sampler` is wired; prints one JSON object.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let mut o = sampler::BenchSamplerOptions::default();
    if let Some(x) = arg(0) {
        o.envs = x.parse()?;
    }
    if let Some(x) = arg(1) {
        o.threads = x.parse()?;
    }
    if let Some(x) = arg(2) {
        o.policy = x.parse()?;
    }
    if let Some(x) = arg(3) {
        o.mode = x.parse()?;
    }
    if let Some(x) = arg(4) {
        o.steps = x.parse()?;
    }
    if let Some(x) = arg(5) {
        o.env = x.to_string();
    }
    println!("{}", sampler::bench_sampler(&o)?);
    Ok(())
}
