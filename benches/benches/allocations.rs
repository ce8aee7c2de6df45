//! Heap allocations per request through the waypoint's whole request path (the `sandwich-h1`
//! job, in process), counted by a global allocator that wraps the system's. The measurement is
//! `waypoint_benches::loadbench::allocations`, which `loadbench allocations` reports too.
//!
//! `cargo bench -p waypoint-benches --bench allocations` averages over 20,000 requests after
//! 2,000 of warm-up; without `--bench` (as `cargo test --benches` runs it) it sends a few as a
//! smoke test. Nothing is asserted about the counts: they are measured, not goals.
#![allow(missing_docs)]

use std::process::ExitCode;

use waypoint_benches::alloc_count::Counting;
use waypoint_benches::loadbench::allocations::measure;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    let (warmup, n) = if full { (2_000, 20_000) } else { (20, 50) };
    let counts = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(measure(warmup, n)));
    let counts = match counts {
        Ok(counts) => counts,
        Err(e) => {
            eprintln!("allocations: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (through, direct, share) = (counts.through, counts.direct, counts.share());
    println!(
        "allocations per request, sandwich-h1 job (1 HTTPRoute, 10 ALLOW policies), {n} requests on one keep-alive connection after {warmup} of warm-up"
    );
    for (what, c) in [
        ("through the waypoint", through),
        ("direct to upstream", direct),
        ("the waypoint's share", share),
    ] {
        println!(
            "  {what:<22} {:>8.1} allocations  {:>10.0} bytes",
            c.allocations, c.bytes
        );
    }
    ExitCode::SUCCESS
}
