//! Write a transcript with frames: `cargo run -p envs --release --example transcript -- NAME TASK
//! SEED ACTIONS(comma-separated) [DIR]`; prints the JSON transcript.

use envs::{tools::transcript, EnvConfig};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let res = (|| -> Result<String, String> {
        if a.len() < 4 {
            return Err("usage: NAME TASK SEED ACTIONS [DIR]".into());
        }
        let cfg = EnvConfig::from_name(&a[0]).map_err(|e| e.to_string())?;
        let task: u64 = a[1].parse().map_err(|e| format!("task: {e}"))?;
        let seed: u64 = a[2].parse().map_err(|e| format!("seed: {e}"))?;
        let actions = a[3]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|e| format!("action {s}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dir = a.get(4).map(std::path::PathBuf::from);
        let t =
            transcript(&cfg, task, seed, &actions, dir.as_deref()).map_err(|e| e.to_string())?;
        Ok(t.to_string())
    })();
    match res {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
