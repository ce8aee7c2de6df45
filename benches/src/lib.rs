//! waypoint's benchmarks. Criterion micro-benchmarks live in `benches/`
//! (`cargo bench -p waypoint-benches`); the side-by-side load benchmark against Envoy is the
//! `loadbench` binary (`cargo run --release -p waypoint-benches --bin loadbench -- --quick`),
//! built from the [`loadbench`] modules here so their parts are unit-tested.

pub mod alloc_count;
pub mod loadbench;
