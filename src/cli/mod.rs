//! The command line: a thin face over `service`, as the HTTP API is. One file per command;
//! `args` holds the grammar and how flags layer over the configuration.

mod args;
mod context;
mod dataset;
mod error;
mod evaluate;
mod explain;
mod healthcheck;
mod models;
mod preprocess;
mod serve;

pub use args::Cli;
pub use error::CliError;

use std::time::Duration;

use crate::config::{Config, layer};
use crate::service::ServiceConfig;
use args::Command;
use context::Load;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut layers = vec![layer(&cli.global)?];
    if let Command::Serve(a) = &cli.command {
        layers.push(layer(a)?);
    }
    let config = Config::layered(cli.global.config.as_deref(), &layers)?;
    // No result cache: a one-shot command never asks twice.
    let one_shot = ServiceConfig { limits: config.limits.clone(), cache_mib: 0, ..Default::default() };
    match cli.command {
        Command::Healthcheck(args) => {
            let addr = args.bind.unwrap_or(config.server.bind);
            return healthcheck::check(&addr, Duration::from_millis(args.timeout_ms));
        }
        Command::Methods => return models::methods(),
        _ => {}
    }
    context::init_logging(&config.server.log_format);
    let (service, result) = match cli.command {
        Command::Serve(_) => return serve::serve(config).await,
        Command::Explain(args) if args.dataset.merge_index => return dataset::merge(&args),
        Command::Explain(args) if args.is_dataset() && args.dataset.server.is_some() => {
            // Client mode: the server has the model; nothing to load here.
            return dataset::run(&args, config.limits.clone(), None).await;
        }
        Command::Explain(args) => {
            let service = context::start(&config, Load::One(args.model.clone()), one_shot)?;
            let result = if args.is_dataset() {
                dataset::run(&args, config.limits.clone(), Some(service.clone())).await
            } else {
                explain::explain(&service, *args).await
            };
            (service, result)
        }
        Command::Predict(args) => {
            let service = context::start(&config, Load::One(args.model.clone()), one_shot)?;
            let result = explain::predict(&service, args).await;
            (service, result)
        }
        Command::Preprocess(args) => {
            let service = context::start(&config, Load::One(args.model.clone()), one_shot)?;
            let result = preprocess::preprocess(&service, args).await;
            (service, result)
        }
        Command::Evaluate(args) => {
            let service = context::start(&config, Load::One(args.model.clone()), one_shot)?;
            let result = evaluate::evaluate(&service, args).await;
            (service, result)
        }
        Command::Models => {
            let service = context::start(&config, Load::All, one_shot)?;
            let result = models::list(&service);
            (service, result)
        }
        Command::Healthcheck(_) | Command::Methods => unreachable!("handled above"),
    };
    service.shutdown(Duration::from_secs(1)).await;
    result
}
