//! Environments. See DESIGN.md §3.
