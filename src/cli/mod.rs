//! The command line: a thin face over `pipeline` and `engine`, as the HTTP API is.

mod commands;

pub use commands::{Cli, run};
