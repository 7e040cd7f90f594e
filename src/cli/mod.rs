pub mod args;
pub mod commands;
pub mod evaluate;
pub mod study;
pub mod train;
