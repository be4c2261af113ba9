//! Validation of a whole run config: each section's own checks (in [`super::schema`] and
//! [`super::baselines`]), the rules that span sections, and the size limits of
//! [`super::limits`]. Kept apart from the schema so that the limits, which read the schema's
//! types, do not import the file that calls them.

use envs::EnvConfig;

use super::load::{prefixed, Validate};
use super::schema::{Config, EvalSplit, Method};

/// The env's own validation paths start with its variant name (`DarkRoom.size`); in the file
/// and in `--set` paths the variant is transparent (`env.size`).
fn env_problems(env: &EnvConfig) -> Vec<(String, String)> {
    env.validate()
        .into_iter()
        .map(|(path, message)| {
            let path = match path.split_once('.') {
                Some((head, rest)) if head.chars().next().is_some_and(char::is_uppercase) => {
                    rest.to_string()
                }
                _ => path,
            };
            (path, message)
        })
        .collect()
}

impl Validate for Config {
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.name.is_empty() {
            out.push(("name".to_string(), "must not be empty".to_string()));
        }
        out.extend(prefixed("env", env_problems(&self.env)));
        out.extend(prefixed("model", self.model.validate()));
        match &self.method {
            Method::Relic(ppo) => out.extend(prefixed("method", ppo.validate())),
            Method::Dpt(c) => out.extend(prefixed("method", c.validate())),
            Method::Ad(c) => out.extend(prefixed("method", c.validate())),
            Method::Rl2(c) => out.extend(prefixed("method", c.validate())),
            Method::PpoTask(c) => out.extend(prefixed("method", c.validate())),
            Method::BanditBaselines(c) => out.extend(prefixed("method", c.validate())),
        }
        out.extend(prefixed("sampler", self.sampler.validate()));
        out.extend(prefixed("eval", self.eval.validate()));
        if self.train_on_validation && !matches!(self.method, Method::Relic(_) | Method::Rl2(_)) {
            out.push((
                "train_on_validation".to_string(),
                format!(
                    "is supported by Relic and Rl2 only; {} trains on the Train split",
                    self.method_name()
                ),
            ));
        }
        if self.train_on_validation && self.eval.split == EvalSplit::Validation {
            out.push((
                "eval.split".to_string(),
                "Validation, but train_on_validation is true: the run trains on the \
                 Validation tasks, so its Validation scores would not be held out"
                    .to_string(),
            ));
        }
        out.extend(prefixed("logging", self.logging.validate()));
        out.extend(prefixed("checkpoint", self.checkpoint.validate()));
        out.extend(prefixed("runtime", self.runtime.validate()));
        // More replicas than a minibatch has sequences is not an error: ReLIC and DPT use at
        // most one replica per sequence (so shrinking `num_envs` with --set keeps a config valid).
        if self.runtime.update_replicas > 1
            && !matches!(self.method, Method::Relic(_) | Method::Dpt(_))
        {
            out.push((
                "runtime.update_replicas".to_string(),
                format!(
                    "is supported by Relic and Dpt only; set it to 1 for {}",
                    self.method_name()
                ),
            ));
        }
        out.extend(super::limits::problems(self));
        out
    }
}
