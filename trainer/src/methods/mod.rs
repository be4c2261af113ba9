//! The training methods, one module each: the algorithm read top to bottom, with the run's
//! chores (folder, checkpoints, logging, interrupts) borrowed from [`crate::run`].

pub mod ad;
pub mod bandit;
pub mod dpt;
pub mod ppo_single_task;
pub mod relic;
pub mod rl2;
