//! Environment benchmark: random actions, observations written.
//!
//! `cargo run -p envs --release --example bench -- [--env NAME] [--envs B] [--threads T]
//! [--steps N] [--seed S] [--image HxW]`; prints one JSON object on its last line.

use envs::{tools::bench, EnvConfig};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut env = "darkroom".to_string();
    let mut envs = 64usize;
    let mut threads = 1usize;
    let mut steps = 1_000_000usize;
    let mut seed = 0u64;
    let mut image: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .ok_or_else(|| format!("{} needs a value", args[i]))?;
        let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{}: {e}", args[i]));
        match args[i].as_str() {
            "--env" => env = v.clone(),
            "--envs" => envs = num(v)? as usize,
            "--threads" => threads = num(v)? as usize,
            "--steps" => steps = num(v)? as usize,
            "--seed" => seed = num(v)?,
            "--image" => {
                let (h, w) = v.split_once('x').ok_or("--image wants HxW")?;
                image = Some((num(h)? as usize, num(w)? as usize));
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    let mut cfg = EnvConfig::from_name(&env).map_err(|e| e.to_string())?;
    if let Some((h, w)) = image {
        match &mut cfg {
            EnvConfig::OneRoom(c) => (c.image_height, c.image_width) = (h, w),
            EnvConfig::HouseNav(c) => (c.image_height, c.image_width) = (h, w),
            _ => return Err(format!("{env} has no image")),
        }
    }
    let r = bench(&cfg, envs, threads, steps, seed).map_err(|e| e.to_string())?;
    println!("{r}");
    Ok(())
}
