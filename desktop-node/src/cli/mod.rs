//! Subcommands of the `desktop-node` binary that need more than a few lines.

pub mod apps;
