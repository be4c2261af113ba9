//! Trainers, evaluation, logging, checkpoints and the `icrl` command line. See DESIGN.md §6-8.
pub mod cli;
