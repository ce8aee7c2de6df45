//! Benchmarks live in `benches/`: `cargo bench -p waypoint-benches`. This library is empty; it
//! exists so the package has a target besides its benchmarks.
