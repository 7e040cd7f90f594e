//! The `mmix` command line: argument types, the commands, and the configuration they resolve.

pub mod args;
pub mod commands;
pub mod evaluate;
pub mod study;
pub mod train;
