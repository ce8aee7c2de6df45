//! Library side of the `waypoint` command: the CLI definition and the tools it offers, kept in
//! a library so the end-to-end tests drive exactly what the binary runs.

pub mod cli;
pub mod tools;
