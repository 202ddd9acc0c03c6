use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before the runtime starts any thread (see engine::memory).
    scorecam::engine::memory::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = scorecam::cli::Cli::parse();
    match runtime.block_on(scorecam::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
