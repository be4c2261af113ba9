//! The policy. See DESIGN.md §4.
