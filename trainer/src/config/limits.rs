//! Upper bounds on the sizes a config may ask for. A size beyond them cannot work on any
//! machine (or overflows an index) and used to pass `icrl check`, failing only later when the
//! run allocated its buffers; [`problems`] names each such field with its limit, so `icrl
//! check` and `icrl train` reject the config before anything is allocated.
//!
//! The limits sit far above every config in `configs/` and the papers' settings (ReLIC's
//! longest trials are 65,536 steps, DPT's contexts a few hundred transitions), so they only
//! catch typos and overflows, never a real experiment.

use envs::EnvConfig;

use super::schema::{Config, Method};

/// Parallel environments of one run (`num_envs`).
pub const MAX_ENVS: usize = 1 << 16;
/// Steps of one env in one rollout: the trial length (ReLIC's `rollout_len`, RL²'s
/// `episodes_per_trial * horizon`, the per-task PPO's `rollout_len`).
pub const MAX_TRIAL_STEPS: usize = 1 << 20;
/// Env steps one rollout holds in storage: `num_envs * trial steps`.
pub const MAX_ROLLOUT_STEPS: usize = 1 << 28;
/// Bytes of the frames one rollout holds (`num_envs * trial steps * height * width * 3`):
/// 1 TiB, more than any single machine's memory.
pub const MAX_ROLLOUT_FRAME_BYTES: u128 = 1 << 40;
/// Tokens of one context: DPT/AD `context_len`, `history_len`, AD's `window`, the evaluation
/// window, the model's position tables.
pub const MAX_CONTEXT: usize = 1 << 20;
/// Contexts or windows in one optimiser step (`batch_size`).
pub const MAX_BATCH: usize = 1 << 16;
/// Records generated per training task (`samples_per_task`, `windows_per_history`).
pub const MAX_SAMPLES_PER_TASK: usize = 1 << 24;
/// Trials per task and episodes per trial of the evaluation.
pub const MAX_EVAL_TRIALS: usize = 1 << 20;
/// Transformer blocks and attention heads.
pub const MAX_LAYERS: usize = 1024;
/// Widths of the model: `d_model`, `mlp_hidden`, `encoder_hidden`, RL²'s `hidden`, the
/// per-task PPO's `hidden`, each CNN's channels.
pub const MAX_WIDTH: usize = 1 << 16;
/// Convolutions of the image CNN.
pub const MAX_CNN_LAYERS: usize = 16;

/// Every size of `config` beyond its limit, as (field path, message naming the limit).
pub fn problems(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let model = &config.model;
    at_most(&mut out, "model.layers", model.layers, MAX_LAYERS, "blocks");
    at_most(&mut out, "model.heads", model.heads, MAX_LAYERS, "heads");
    at_most(&mut out, "model.d_model", model.d_model, MAX_WIDTH, "units");
    at_most(
        &mut out,
        "model.mlp_hidden",
        model.mlp_hidden,
        MAX_WIDTH,
        "units",
    );
    at_most(
        &mut out,
        "model.encoder_hidden",
        model.encoder_hidden,
        MAX_WIDTH,
        "units",
    );
    at_most(
        &mut out,
        "model.max_positions",
        model.max_positions,
        MAX_CONTEXT,
        "tokens",
    );
    at_most(
        &mut out,
        "model.max_episode_steps",
        model.max_episode_steps,
        MAX_CONTEXT,
        "steps",
    );
    at_most(
        &mut out,
        "model.cnn_channels",
        model.cnn_channels.len(),
        MAX_CNN_LAYERS,
        "convolutions",
    );
    for (i, &c) in model.cnn_channels.iter().enumerate() {
        at_most(
            &mut out,
            &format!("model.cnn_channels[{i}]"),
            c,
            MAX_WIDTH,
            "channels",
        );
    }

    let eval = &config.eval;
    at_most(
        &mut out,
        "eval.trials_per_task",
        eval.trials_per_task,
        MAX_EVAL_TRIALS,
        "trials",
    );
    at_most(
        &mut out,
        "eval.episodes_per_trial",
        eval.episodes_per_trial,
        MAX_EVAL_TRIALS,
        "episodes",
    );
    if let Some(window) = eval.context_window {
        at_most(
            &mut out,
            "eval.context_window",
            window,
            MAX_CONTEXT,
            "tokens",
        );
    }

    let horizon = config.env.spec().horizon;
    // (num_envs, steps per env in one rollout, the field that sets the trial length)
    let rollout = match &config.method {
        Method::Relic(c) => {
            at_most(
                &mut out,
                "method.num_envs",
                c.num_envs,
                MAX_ENVS,
                "environments",
            );
            at_most(
                &mut out,
                "method.rollout_len",
                c.rollout_len,
                MAX_TRIAL_STEPS,
                "steps",
            );
            Some((c.num_envs, c.rollout_len, "method.rollout_len"))
        }
        Method::Rl2(c) => {
            at_most(
                &mut out,
                "method.num_envs",
                c.num_envs,
                MAX_ENVS,
                "environments",
            );
            at_most(&mut out, "method.hidden", c.hidden, MAX_WIDTH, "units");
            let trial = c.episodes_per_trial.saturating_mul(horizon);
            if trial > MAX_TRIAL_STEPS {
                out.push((
                    "method.episodes_per_trial".to_string(),
                    format!(
                        "a trial of {} episodes of {horizon} steps is {trial} steps, over the limit \
                         of {MAX_TRIAL_STEPS} steps",
                        c.episodes_per_trial
                    ),
                ));
            }
            Some((c.num_envs, trial, "method.episodes_per_trial"))
        }
        Method::PpoTask(c) => {
            at_most(
                &mut out,
                "method.num_envs",
                c.num_envs,
                MAX_ENVS,
                "environments",
            );
            at_most(
                &mut out,
                "method.rollout_len",
                c.rollout_len,
                MAX_TRIAL_STEPS,
                "steps",
            );
            at_most(&mut out, "method.hidden", c.hidden, MAX_WIDTH, "units");
            Some((c.num_envs, c.rollout_len, "method.rollout_len"))
        }
        Method::Dpt(c) => {
            data_problems(&mut out, &c.data);
            at_most(
                &mut out,
                "method.batch_size",
                c.batch_size,
                MAX_BATCH,
                "contexts",
            );
            at_most(
                &mut out,
                "method.offline_contexts_per_task",
                c.offline_contexts_per_task,
                MAX_SAMPLES_PER_TASK,
                "contexts",
            );
            None
        }
        Method::Ad(c) => {
            data_problems(&mut out, &c.data);
            at_most(
                &mut out,
                "method.batch_size",
                c.batch_size,
                MAX_BATCH,
                "windows",
            );
            at_most(&mut out, "method.window", c.window, MAX_CONTEXT, "steps");
            None
        }
        Method::BanditBaselines(_) => None,
    };
    if let Some((envs, steps, field)) = rollout {
        rollout_problems(&mut out, &config.env, envs, steps, field);
    }
    out
}

/// Records `field` when its `value` is over `limit` (`what` names the unit).
fn at_most(out: &mut Vec<(String, String)>, field: &str, value: usize, limit: usize, what: &str) {
    if value > limit {
        out.push((
            field.to_string(),
            format!("{value} is over the limit of {limit} {what}"),
        ));
    }
}

/// The dataset section of DPT and AD.
fn data_problems(out: &mut Vec<(String, String)>, data: &super::DataConfig) {
    at_most(
        out,
        "method.data.samples_per_task",
        data.samples_per_task,
        MAX_SAMPLES_PER_TASK,
        "records",
    );
    at_most(
        out,
        "method.data.windows_per_history",
        data.windows_per_history,
        MAX_SAMPLES_PER_TASK,
        "records",
    );
    at_most(
        out,
        "method.data.context_len",
        data.context_len,
        MAX_CONTEXT,
        "transitions",
    );
    at_most(
        out,
        "method.data.history_len",
        data.history_len,
        MAX_CONTEXT,
        "steps",
    );
}

/// What one rollout holds: `envs * steps` env steps, and as many frames for image envs.
fn rollout_problems(
    out: &mut Vec<(String, String)>,
    env: &EnvConfig,
    envs: usize,
    steps: usize,
    trial_field: &str,
) {
    if envs == 0 || steps == 0 || envs > MAX_ENVS || steps > MAX_TRIAL_STEPS {
        return; // reported on its own
    }
    let held = envs * steps; // both bounded above: no overflow
    if held > MAX_ROLLOUT_STEPS {
        out.push((
            trial_field.to_string(),
            format!(
                "one rollout holds num_envs x trial steps = {envs} x {steps} = {held} env steps, \
                 over the limit of {MAX_ROLLOUT_STEPS}"
            ),
        ));
        return;
    }
    let frame = env.spec().image_bytes() as u128;
    let bytes = held as u128 * frame;
    if bytes > MAX_ROLLOUT_FRAME_BYTES {
        out.push((
            trial_field.to_string(),
            format!(
                "one rollout's frames take num_envs x trial steps x {frame} bytes = {bytes} bytes, \
                 over the limit of {MAX_ROLLOUT_FRAME_BYTES} bytes (1 TiB); use fewer envs, \
                 shorter trials or smaller images"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PpoConfig, Validate};

    fn relic(num_envs: usize, rollout_len: usize) -> Config {
        Config {
            method: Method::Relic(PpoConfig {
                num_envs,
                rollout_len,
                updates_per_rollout: 1,
                minibatches: 1,
                ..PpoConfig::default()
            }),
            ..Config::default()
        }
    }

    #[test]
    fn sizes_that_cannot_work_are_named_with_their_limit() {
        let problems = relic(1_000_000_000_000, 512).validate();
        let (field, message) = problems
            .iter()
            .find(|(f, _)| f == "method.num_envs")
            .expect("num_envs is rejected");
        assert_eq!(field, "method.num_envs");
        assert!(message.contains(&MAX_ENVS.to_string()), "{message}");

        let problems = problems_of(relic(MAX_ENVS, MAX_TRIAL_STEPS));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "method.rollout_len");
        assert!(problems[0].1.contains("268435456"), "{problems:?}");
    }

    fn problems_of(config: Config) -> Vec<(String, String)> {
        problems(&config)
    }

    #[test]
    fn image_rollouts_are_bounded_by_their_frames() {
        let mut config = relic(4096, 65_536);
        config.env = envs::EnvConfig::OneRoom(envs::OneRoomConfig {
            image_height: 1024,
            image_width: 1024,
            ..Default::default()
        });
        let problems = problems_of(config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.contains("1 TiB"), "{problems:?}");
    }

    #[test]
    fn every_shipped_config_is_within_the_limits() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let config: Config = crate::config::from_ron_str(&text, "x").unwrap();
            assert!(problems(&config).is_empty(), "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 10);
    }
}
