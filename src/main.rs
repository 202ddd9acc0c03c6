use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = scorecam::cli::Cli::parse();
    match scorecam::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
