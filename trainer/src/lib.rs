//! Trainers, evaluation, logging, checkpoints and the `icrl` command line. See DESIGN.md §6-8.
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod info;
pub mod logging;
pub mod progress;
pub mod run_dir;

pub use config::Config;
pub mod optim;
pub mod ppo_math;
pub mod stats;
