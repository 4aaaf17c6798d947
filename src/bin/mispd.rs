//! `mispd`: the daemon. A shim over `mispd::daemon`.

use clap::Parser;
use mispd::daemon::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread exists, so that every arena is made with these settings.
    mispd::sys::tune_allocator();
    let args = Args::parse();
    if let Err(e) = mispd::sys::harden_process() {
        eprintln!("mispd: cannot disable core dumps: {e}");
        return ExitCode::from(1);
    }
    mispd::logging::init();
    let config = match mispd::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists: claiming the socket removes LISTEN_* from the environment.
    let activated = mispd::query::from_systemd();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(mispd::daemon::run(args.config, config, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
