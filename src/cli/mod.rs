//! The command line: a thin face over `pipeline` and `engine`, as the HTTP API is.

mod commands;
mod evaluate;

pub use commands::{Cli, run};
