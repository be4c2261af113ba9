//! Tools for people: transcripts with PNG frames and maps, task lists, and the environment
//! benchmark. The `icrl env` and `icrl bench env` commands call these.

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::grid::GridRules;
use crate::house::generate;
use crate::image::{grid_map, scene_map, write_png};
use crate::one_room::OneRoomWorld;
use crate::rng::FastRng;
use crate::world::Scene;
use crate::{EnvConfig, EnvError, ObsBatch, Split, StepBatch, TaskId, VecEnv};

/// Pixels per metre of 3D-world maps.
const MAP_PX_PER_M: f32 = 24.0;
/// Pixels per cell of grid-world maps.
const GRID_CELL_PX: usize = 24;

fn io_err(path: &Path, e: std::io::Error) -> EnvError {
    EnvError::Io(format!("{}: {e}", path.display()))
}

/// The rules of a grid world, None for the other environments.
fn grid_rules(config: &EnvConfig) -> Option<GridRules> {
    match config {
        EnvConfig::DarkRoom(c) => Some(c.rules()),
        EnvConfig::DarkRoomAd(c) => Some(c.rules()),
        EnvConfig::DarkRoomHard(c) => Some(c.rules()),
        EnvConfig::KeyToDoor(c) => Some(c.rules()),
        _ => None,
    }
}

/// Every split's task ids as JSON (`icrl env NAME --list-tasks`), so a user can see what is
/// held out: `{"env", "rule", "splits": {"train" | "validation" | "test": {"count", "tasks"}}}`.
/// Grid worlds also list each task's `goals` as `[x, y]` (Key-to-Door: `keys` too). Generated
/// task spaces (bandit, house_nav) hold contiguous ids and are listed as `first` and `last`.
pub fn task_lists(config: &EnvConfig) -> Result<Value, EnvError> {
    let env = config.build(0, 0, 1)?;
    let rules = grid_rules(config);
    let generated = matches!(config, EnvConfig::Bandit(_) | EnvConfig::HouseNav(_));
    let mut splits = serde_json::Map::new();
    for split in Split::ALL {
        let tasks = env.tasks(split);
        let mut entry = json!({ "count": tasks.len() });
        if generated {
            entry["first"] = json!(tasks.first());
            entry["last"] = json!(tasks.last());
        } else {
            entry["tasks"] = json!(tasks);
        }
        if let Some(rules) = &rules {
            let decoded = tasks
                .iter()
                .map(|&t| rules.task(t))
                .collect::<Result<Vec<_>, _>>()?;
            let cells = |c: (i32, i32)| json!([c.0, c.1]);
            entry["goals"] = decoded.iter().map(|t| cells(t.goal)).collect();
            if decoded.iter().any(|t| t.key.is_some()) {
                entry["keys"] = decoded
                    .iter()
                    .map(|t| t.key.map_or(Value::Null, cells))
                    .collect();
            }
        }
        splits.insert(split.name().to_string(), entry);
    }
    let rule = match (&rules, generated) {
        (Some(_), _) => {
            "task ids in order shuffled by numpy's RandomState(0) (np.random.RandomState(0)\
             .permutation(n)); the first 80% are the training part, whose last eighth is \
             validation and the rest train; the last 20% are test (DPT's Dark Room split)"
        }
        (None, true) => "separate contiguous id ranges; validation holds as many tasks as test",
        (None, false) => "the four target colours are in every split, as in DPT",
    };
    Ok(json!({ "env": config.name(), "rule": rule, "splits": splits }))
}

/// Step one env (slot 0 of `config.build(seed, 0, 1)`, put on `task`) through `actions` and
/// return a JSON transcript: per step the state before the action (`describe`), the action,
/// reward, terminated, truncated, success, and whether a new episode started.
///
/// With `frames_dir`, the directory is created and gets `frame_0000.png` (the first
/// observation) and `frame_NNNN.png` after each step for RGB environments, plus `map.png`: a
/// top-down map with walls, objects and the paths taken (3D worlds), or the grid with goal, key
/// and path (grid worlds). Bad actions are an error before anything is stepped.
pub fn transcript(
    config: &EnvConfig,
    task: TaskId,
    seed: u64,
    actions: &[u32],
    frames_dir: Option<&Path>,
) -> Result<Value, EnvError> {
    let mut env = config.build(seed, 0, 1)?;
    env.set_task(0, task)?;
    let spec = env.spec().clone();
    if let Some((i, &a)) = actions
        .iter()
        .enumerate()
        .find(|(_, &a)| a as usize >= spec.num_actions)
    {
        return Err(EnvError::ActionOutOfRange {
            env: spec.name.clone(),
            slot: i,
            action: a,
            num_actions: spec.num_actions,
        });
    }
    if let Some(dir) = frames_dir {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut obs = ObsBatch::new(&spec, 1);
    env.reset(&mut obs);
    let save_frame = |dir: Option<&Path>, k: usize, obs: &ObsBatch| -> Result<(), EnvError> {
        if let (Some(dir), Some(im)) = (dir, spec.image) {
            write_png(
                &dir.join(format!("frame_{k:04}.png")),
                im.width,
                im.height,
                &obs.image,
            )?;
        }
        Ok(())
    };
    save_frame(frames_dir, 0, &obs)?;
    let initial = env.describe(0);
    let mut out = StepBatch::new(&spec, 1);
    let mut steps = Vec::with_capacity(actions.len());
    let mut paths: Vec<Vec<Value>> = vec![vec![initial.clone()]];
    let mut total = 0.0f64;
    let mut episodes = 0usize;
    let mut successes = 0usize;
    for (k, &a) in actions.iter().enumerate() {
        let before = env.describe(0);
        env.step(&[a], &mut out)?;
        let ended = out.terminated[0] || out.truncated[0];
        total += out.reward[0] as f64;
        let after = env.describe(0);
        steps.push(json!({
            "step": k,
            "state": before,
            "action": a,
            "reward": out.reward[0],
            "terminated": out.terminated[0],
            "truncated": out.truncated[0],
            "success": out.success[0],
            "episode_ended": ended,
            "obs_vector": out.obs.vector,
        }));
        if ended {
            episodes += 1;
            successes += out.success[0] as usize;
            paths.push(vec![after]);
        } else if let Some(p) = paths.last_mut() {
            p.push(after);
        }
        save_frame(frames_dir, k + 1, &out.obs)?;
    }
    if let Some(dir) = frames_dir {
        write_map(config, env.as_ref(), task, &paths, &dir.join("map.png"))?;
    }
    Ok(json!({
        "env": config.name(),
        "task": task,
        "seed": seed,
        "spec": {
            "num_actions": spec.num_actions,
            "vector_dim": spec.vector_dim,
            "vector_segments": spec.vector_segments,
            "image": spec.image.map(|i| [i.height, i.width]),
            "horizon": spec.horizon,
        },
        "initial": initial,
        "steps": steps,
        "total_reward": total,
        "episodes_ended": episodes,
        "successes": successes,
        "final": env.describe(0),
    }))
}

fn write_map(
    config: &EnvConfig,
    _env: &dyn VecEnv,
    task: TaskId,
    paths: &[Vec<Value>],
    file: &Path,
) -> Result<(), EnvError> {
    let xy = |v: &Value| Some([v["x"].as_f64()? as f32, v["y"].as_f64()? as f32]);
    let world_paths: Vec<Vec<[f32; 2]>> = paths
        .iter()
        .map(|p| p.iter().filter_map(xy).collect())
        .collect();
    let scene: Option<Scene> = match config {
        EnvConfig::OneRoom(c) => Some(OneRoomWorld::new(c).scene),
        EnvConfig::HouseNav(c) => Some(generate(task, &c.house_params()).scene),
        _ => None,
    };
    if let Some(scene) = scene {
        return scene_map(&scene, &world_paths, MAP_PX_PER_M).save(file);
    }
    let Some(rules) = config.grid_rules() else {
        return Ok(()); // bandits have no map
    };
    let t = rules.task(task)?;
    let cells: Vec<Vec<(i32, i32)>> = world_paths
        .iter()
        .map(|p| p.iter().map(|q| (q[0] as i32, q[1] as i32)).collect())
        .collect();
    grid_map(&rules, &t, &cells, GRID_CELL_PX).save(file)
}

/// CPU time (s) of the calling thread from `/proc/thread-self/stat` (Linux; clock ticks at
/// USER_HZ = 100); `None` where unavailable.
fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Holds the benchmark threads until all of them have been spawned, then starts them together
/// (their common start time) or tells them to quit when one could not be spawned. A `Barrier`
/// sized for every thread would wait forever for a thread that never started.
#[derive(Default)]
struct StartGate {
    /// None while spawning; then Some(Some(start)) to go, Some(None) to quit.
    state: Mutex<Option<Option<Instant>>>,
    opened: Condvar,
}

impl StartGate {
    /// Blocks until [`StartGate::open`]; the common start time, or None to quit.
    fn wait(&self) -> Option<Instant> {
        // A poisoned lock only means another thread panicked; the state is still valid.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(start) = *state {
                return start;
            }
            state = self.opened.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Releases every waiting thread: to run (`go`) from now, or to quit.
    fn open(&self, go: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = Some(go.then(Instant::now));
        self.opened.notify_all();
    }
}

/// Benchmark: `threads` threads each own a shard of the `envs` slots (`config.build(seed,
/// first_slot, count)`) and step it with uniformly random actions (xorshift, drawn inside the
/// loop), observations written as in training. Runs `ceil(steps / envs)` batch steps per
/// shard. Returns JSON with env, envs, threads, steps (total env steps), seconds (wall time from
/// a common start to the last shard's end), steps_per_sec, plus image size, episode counts and,
/// on Linux, `cpu_seconds` (CPU time of the stepping threads) and `steps_per_cpu_sec`, which
/// tell whether a low wall-clock figure comes from other processes sharing the cores.
pub fn bench(
    config: &EnvConfig,
    envs: usize,
    threads: usize,
    steps: usize,
    seed: u64,
) -> Result<Value, EnvError> {
    bench_spawning(config, envs, threads, steps, seed, usize::MAX)
}

/// [`bench`], where spawning the thread with index `startable` (and later ones) fails as if
/// the process were out of threads (tests of that path; `usize::MAX` in real use).
fn bench_spawning(
    config: &EnvConfig,
    envs: usize,
    threads: usize,
    steps: usize,
    seed: u64,
    startable: usize,
) -> Result<Value, EnvError> {
    let mut errs = Vec::new();
    if envs == 0 {
        errs.push("envs must be >= 1".to_string());
    }
    if threads == 0 || threads > envs.max(1) {
        errs.push(format!(
            "threads must be in 1..=envs ({envs}), got {threads}"
        ));
    }
    if steps == 0 {
        errs.push("steps must be >= 1".to_string());
    }
    if !errs.is_empty() {
        return Err(EnvError::InvalidConfig(errs));
    }
    let batch_steps = steps.div_ceil(envs);
    // Build every shard first, so a build error cannot leave threads waiting at the barrier.
    let mut shards = Vec::with_capacity(threads);
    let mut first = 0;
    for t in 0..threads {
        let count = envs / threads + usize::from(t < envs % threads);
        let mut env = config.build(seed, first, count)?;
        let spec = env.spec().clone();
        let mut obs = ObsBatch::new(&spec, count);
        env.reset(&mut obs);
        shards.push((env, StepBatch::new(&spec, count), count));
        first += count;
    }
    let gate = StartGate::default();
    type ThreadResult = Result<(f64, usize, f64, Option<f64>), EnvError>;
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        let mut spawn_error = None;
        for (t, (mut env, mut out, count)) in shards.into_iter().enumerate() {
            let gate = &gate;
            let spawned = if t >= startable {
                Err(std::io::Error::other("no thread left (injected)"))
            } else {
                std::thread::Builder::new()
                    .name(format!("bench-env-{t}"))
                    .spawn_scoped(s, move || -> ThreadResult {
                        let k = env.spec().num_actions as u32;
                        let mut rng = FastRng::new(seed ^ ((t as u64 + 1) << 32));
                        let mut actions = vec![0u32; count];
                        let mut ended = 0usize;
                        let mut reward = 0.0f64;
                        let Some(start) = gate.wait() else {
                            return Err(EnvError::Bench("cancelled".into()));
                        };
                        let cpu0 = thread_cpu_seconds();
                        for _ in 0..batch_steps {
                            for a in actions.iter_mut() {
                                *a = rng.below(k);
                            }
                            env.step(&actions, &mut out)?;
                            reward += out.reward.iter().map(|&r| r as f64).sum::<f64>();
                            ended += out
                                .terminated
                                .iter()
                                .zip(&out.truncated)
                                .filter(|(a, b)| **a || **b)
                                .count();
                        }
                        let end = Instant::now();
                        let cpu = match (cpu0, thread_cpu_seconds()) {
                            (Some(a), Some(b)) => Some(b - a),
                            _ => None,
                        };
                        Ok((end.duration_since(start).as_secs_f64(), ended, reward, cpu))
                    })
            };
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    spawn_error = Some(EnvError::Thread(format!(
                        "cannot start benchmark thread {} of {threads}: {e} (lower --threads, \
                         or raise the process limit: ulimit -u)",
                        t + 1
                    )));
                    break;
                }
            }
        }
        // Release the threads that started: to step, or (when one could not start) to quit.
        gate.open(spawn_error.is_none());
        let joined: Vec<ThreadResult> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EnvError::Bench("a benchmark thread panicked".into())))
            })
            .collect();
        match spawn_error {
            Some(e) => vec![Err(e)],
            None => joined,
        }
    });
    let mut seconds = 0.0f64;
    let mut ended = 0;
    let mut reward = 0.0;
    let mut cpu = Some(0.0);
    for r in results {
        let (s, e, rw, c) = r?;
        seconds = seconds.max(s);
        ended += e;
        reward += rw;
        cpu = cpu.zip(c).map(|(a, b)| a + b);
    }
    let total = batch_steps * envs;
    let spec = config.spec();
    Ok(json!({
        "env": config.name(),
        "envs": envs,
        "threads": threads,
        "steps": total,
        "seconds": seconds,
        "steps_per_sec": total as f64 / seconds.max(1e-9),
        "image": spec.image.map(|i| [i.height, i.width]),
        "episodes_ended": ended,
        "mean_reward": reward / total as f64,
        "seed": seed,
        "cpu_seconds": cpu,
        "steps_per_cpu_sec": cpu.filter(|&c| c > 0.0).map(|c| total as f64 / c),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lists_show_dpts_test_goals_and_every_split() {
        let lists = task_lists(&EnvConfig::from_name("darkroom").unwrap()).unwrap();
        let splits = &lists["splits"];
        let counts: Vec<u64> = ["train", "validation", "test"]
            .iter()
            .map(|s| splits[s]["count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, vec![70, 10, 20]);
        // DPT's first test goal is (2, 5), task id 25.
        assert_eq!(splits["test"]["tasks"][0], 25);
        assert_eq!(splits["test"]["goals"][0], json!([2, 5]));
        let k2d = task_lists(&EnvConfig::from_name("key_to_door").unwrap()).unwrap();
        assert_eq!(
            k2d["splits"]["test"]["keys"].as_array().unwrap().len(),
            1313
        );
        let bandit = task_lists(&EnvConfig::from_name("bandit").unwrap()).unwrap();
        assert_eq!(bandit["splits"]["train"]["first"], 0);
        assert!(bandit["splits"]["train"].get("tasks").is_none());
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("envs_tools_{name}_{}", std::process::id()))
    }

    #[test]
    fn transcript_darkroom_and_map() {
        let cfg = EnvConfig::from_name("darkroom").unwrap();
        let dir = tmp("dr");
        let t = transcript(&cfg, 21, 0, &[0, 0, 2, 4], Some(&dir)).unwrap();
        let steps = t["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[2]["state"]["x"], 2);
        assert_eq!(steps[2]["reward"], 1.0); // goal (2, 1)
        assert_eq!(steps[3]["reward"], 1.0);
        assert_eq!(t["total_reward"], 2.0);
        assert!(dir.join("map.png").exists());
        assert!(!dir.join("frame_0000.png").exists());
        assert!(transcript(&cfg, 21, 0, &[0, 5], None).is_err());
        assert!(transcript(&cfg, 100, 0, &[0], None).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn transcript_3d_writes_frames_and_map() {
        for name in ["one_room", "house_nav"] {
            let cfg = EnvConfig::from_name(name).unwrap();
            let dir = tmp(name);
            let t = transcript(&cfg, 2, 4, &[2, 2, 1, 1, 0], Some(&dir)).unwrap();
            assert_eq!(t["steps"].as_array().unwrap().len(), 5);
            for k in 0..=5 {
                assert!(
                    dir.join(format!("frame_{k:04}.png")).exists(),
                    "{name} frame {k}"
                );
            }
            assert!(dir.join("map.png").exists());
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn bench_stops_cleanly_when_a_thread_cannot_start() {
        let cfg = EnvConfig::from_name("darkroom").unwrap();
        // Threads 0..5 start and wait for the others; the 6th cannot start. Before, the five
        // waited at a barrier sized for 8 forever.
        let err = bench_spawning(&cfg, 8, 8, 1000, 0, 5).unwrap_err();
        assert!(matches!(err, EnvError::Thread(_)), "{err}");
        let message = err.to_string();
        assert!(message.contains("thread 6 of 8"), "{message}");
        assert!(message.contains("injected"), "{message}");
        // No thread at all.
        assert!(matches!(
            bench_spawning(&cfg, 4, 4, 10, 0, 0),
            Err(EnvError::Thread(_))
        ));
    }

    #[test]
    fn bench_runs_and_validates() {
        let cfg = EnvConfig::from_name("darkroom").unwrap();
        let r = bench(&cfg, 8, 2, 1000, 0).unwrap();
        assert_eq!(r["steps"], 1000);
        assert_eq!(r["threads"], 2);
        assert!(r["steps_per_sec"].as_f64().unwrap() > 0.0);
        assert!(r.get("cpu_seconds").is_some());
        let r = bench(&cfg, 64, 1, 2_000_000, 0).unwrap();
        let cpu = r["cpu_seconds"].as_f64().unwrap();
        assert!(
            cpu >= 0.0 && cpu <= r["seconds"].as_f64().unwrap() + 0.02,
            "{r}"
        );
        assert!(bench(&cfg, 0, 1, 10, 0).is_err());
        assert!(bench(&cfg, 4, 5, 10, 0).is_err());
        assert!(bench(&cfg, 4, 1, 0, 0).is_err());
        let bad = EnvConfig::OneRoom(crate::OneRoomConfig {
            image_width: 0,
            ..Default::default()
        });
        assert!(bench(&bad, 4, 1, 10, 0).is_err());
    }
}
