//! The side-by-side load benchmark: the whole waypoint path against Envoy, same machine, same
//! run, same job (see `benches/README.md`).

pub mod allocations;
pub mod configs;
pub mod hbone;
pub mod hist;
pub mod load;
pub mod open_loop;
pub mod procs;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod svg;
pub mod tcp;
pub mod tools;
pub mod upstream;
pub mod zeroloss;
