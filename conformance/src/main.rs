//! `waypoint-conformance`: run the Gateway API conformance cases against a waypoint binary and
//! print the ConformanceReport.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use waypoint_conformance::{report, runner};

/// Runs the upstream Gateway API conformance tests against a real waypoint process.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The upstream conformance manifests (the `gateway-api-vX` directory or its `conformance/`).
    #[arg(long, env = "WAYPOINT_CONFORMANCE_DIR")]
    manifests: PathBuf,
    /// The `waypoint` binary to test.
    #[arg(long, env = "WAYPOINT_BIN", default_value = "target/debug/waypoint")]
    waypoint: PathBuf,
    /// The case files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/cases"))]
    cases: PathBuf,
    /// Where to write the ConformanceReport (YAML); `-` for standard output.
    #[arg(long, default_value = "-")]
    report: String,
    /// Working directory for config and logs (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run only the cases whose name contains one of these.
    #[arg(long = "only")]
    only: Vec<String>,
    /// How the waypoint reads the cluster: `kube` (an emulated API server; status read from
    /// the objects it writes) or `files` (a manifest file; status from `/config_dump`).
    #[arg(long, value_enum, default_value = "kube")]
    source: runner::SourceMode,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("waypoint-conformance-{}", std::process::id()))
    });
    let opts = runner::Options {
        manifests: args.manifests,
        cases: args.cases,
        waypoint: args.waypoint,
        work_dir: work_dir.clone(),
        only: args.only,
        consistency_timeout: Duration::from_secs(10),
        source: args.source,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waypoint-conformance: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = match runtime.block_on(runner::run(&opts)) {
        Ok(results) => results,
        Err(e) => {
            eprintln!("waypoint-conformance: {e}");
            return ExitCode::FAILURE;
        }
    };
    let yaml = report::build(&results).to_yaml();
    if args.report == "-" {
        println!("{yaml}");
    } else if let Err(e) = std::fs::write(&args.report, &yaml) {
        eprintln!("waypoint-conformance: writing {}: {e}", args.report);
        return ExitCode::FAILURE;
    }
    eprintln!("{}", report::summary(&results));
    eprintln!("waypoint log and config: {}", work_dir.display());
    let failed = results
        .iter()
        .any(|r| matches!(r.outcome, runner::Outcome::Failed(_)));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
