//! The subcommands of the `desktop-node` binary that need more than a few lines, and
//! what they share.
//!
//! * [`apps`]: `desktop-node apps …` (install, list, remove, permissions);
//! * [`login`]: `desktop-node login` (a code approved in the browser, or a password);
//! * [`keys`]: `desktop-node keys …`, and the secrets `login` and `run` read and write;
//! * [`pair`]: `desktop-node pair` and `desktop-node browsers …`;
//! * [`update`]: `desktop-node update` (signed self-update with rollback);
//! * [`env`]: renamed environment variables (the old names still work, with a warning).

pub mod apps;
pub mod env;
pub mod keys;
pub mod login;
pub mod pair;
pub mod update;
