//! `icrl`: a thin facade over the workspace crates, so that end-to-end tests in `tests/` and
//! downstream users can name everything through one crate.
pub use agent;
pub use envs;
pub use lab;
pub use sampler;
pub use trainer;
