//! Rollout sampling. See DESIGN.md §5.
