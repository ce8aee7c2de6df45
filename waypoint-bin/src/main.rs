//! The `waypoint` command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use waypoint_bin::cli::{self, Cli, Command, LogFormat};
use waypoint_core::runtime::LogLevelHook;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The filter sits behind a reload handle so the admin server can change it live.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match cli.log_format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    let log_level = LogLevelHook(Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Run(args) = &cli.command
        && let Some(threads) = args.worker_threads
    {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run(*args, Some(log_level)).await,
            Command::Controller(args) => cli::controller(*args).await,
            Command::Check(args) => cli::check(args),
            Command::Authz(args) => cli::authz(args),
            Command::Echo(args) => cli::echo(args).await,
            Command::Send(args) => cli::send(args).await,
            Command::Certs(command) => cli::certs(command),
        }
    })
}
