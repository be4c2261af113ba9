//! The config tree: RON files mapped onto typed structs (a doc comment on every field, defaults
//! in code), `--set` overrides, validation and the resolved `config.ron` of a run.

pub mod limits;
pub mod load;
pub mod ron_tree;

pub use load::{
    apply_override, differing_fields, from_ron_str, load, prefixed, to_ron_string, ConfigError,
    Validate,
};
pub mod baselines;
pub mod schema;
mod validate;

pub use baselines::{
    AdConfig, BanditAlgo, BanditBaselinesConfig, ContextKind, DataConfig, DptConfig, OnlineContext,
    PpoCore, PpoTaskConfig, Rl2Config, StateEncoding,
};

pub use schema::{
    CheckpointConfig, Config, EvalConfig, EvalSplit, LogPolicy, LoggingConfig, Method, PpoConfig,
    RuntimeConfig,
};
