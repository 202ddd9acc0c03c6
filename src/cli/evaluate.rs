//! `scorecam evaluate`: the methods' faithfulness over a folder of images, as a table,
//! CSV/JSON files and a plot of the mean deletion and insertion curves.

use std::path::PathBuf;
use std::time::Instant;

use super::CliError;
use super::args::EvaluateArgs;
use crate::evaluation::{self, Candidate, EvaluationConfig};
use crate::render::plot::{Panel, line_charts};
use crate::service::Service;

pub async fn evaluate(service: &Service, args: EvaluateArgs) -> Result<(), CliError> {
    let candidates = if args.methods.is_empty() {
        Candidate::defaults()
    } else {
        args.methods.iter().map(|m| m.parse()).collect::<Result<Vec<Candidate>, _>>().map_err(CliError::Invalid)?
    };
    let labels_path = args.labels.clone().or_else(|| Some(args.dir.join("index.tsv")).filter(|p| p.exists()));
    let labels =
        labels_path.as_deref().map(evaluation::read_labels).transpose().map_err(CliError::Invalid)?.unwrap_or_default();
    let mut images: Vec<PathBuf> =
        evaluation::list_images(&args.dir).map_err(CliError::Invalid)?.into_iter().step_by(args.every.max(1)).collect();
    images.truncate(args.limit.unwrap_or(usize::MAX));
    if images.is_empty() {
        return Err(CliError::Invalid(format!("{}: no images", args.dir.display())));
    }
    let config = EvaluationConfig {
        model: service.model(args.model.as_deref())?.name().to_string(),
        candidates,
        labels,
        seed: args.seed,
    };
    std::fs::create_dir_all(&args.output).map_err(CliError::io(&args.output))?;
    eprintln!(
        "evaluating {} images × {} methods on {} (labels: {})",
        images.len(),
        config.candidates.len(),
        config.model,
        labels_path.as_ref().map_or("none, predicted classes".to_string(), |p| p.display().to_string())
    );
    let bar = indicatif::ProgressBar::new((images.len() * config.candidates.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{elapsed_precise}] [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut records = Vec::new();
    for (i, path) in images.iter().enumerate() {
        bar.set_message(path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
        records.extend(
            evaluation::evaluate_image(service, &config, path, || bar.inc(1)).await.map_err(CliError::Invalid)?,
        );
        // Write as we go: a long run that is stopped still leaves its results.
        write_results(&args.output, &records)?;
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("{}/{} {} ({:.0} s)", i + 1, images.len(), path.display(), started.elapsed().as_secs_f64());
        }
    }
    bar.finish_and_clear();
    let summaries = evaluation::summarize(&records);
    println!("{}", evaluation::markdown_table(&summaries));
    println!("{}", evaluation::paired_table(&pairs(&records, &summaries)));
    eprintln!("results in {} ({:.0} s)", args.output.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Every method paired with exact Score-CAM (`official`) when the run has it, else with
/// the first method.
fn pairs(records: &[evaluation::Record], summaries: &[evaluation::Summary]) -> Vec<evaluation::Paired> {
    let exact = "scorecam:official";
    let reference = summaries.iter().find(|s| s.method == exact).or(summaries.first());
    reference.map(|r| evaluation::paired(records, &r.method)).unwrap_or_default()
}

fn write_results(dir: &std::path::Path, records: &[evaluation::Record]) -> Result<(), CliError> {
    let summaries = evaluation::summarize(records);
    let paired = pairs(records, &summaries);
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(CliError::io(&p))
    };
    write("results.csv", evaluation::records_csv(records).as_bytes())?;
    let md = format!("{}\n{}", evaluation::markdown_table(&summaries), evaluation::paired_table(&paired));
    write("summary.md", md.as_bytes())?;
    let json = serde_json::json!({ "summary": summaries, "paired": paired, "records": records });
    write("summary.json", &serde_json::to_vec_pretty(&json).map_err(|e| CliError::Invalid(e.to_string()))?)?;
    let panel = |title: &str, curve: fn(&evaluation::Summary) -> &Vec<f64>| Panel {
        title: title.into(),
        series: summaries.iter().map(|s| (s.method.clone(), curve(s).clone())).collect(),
    };
    let chart = line_charts(
        &[
            panel("Deletion: p(class) as top pixels go (lower = better)", |s| &s.deletion_curve),
            panel("Insertion: p(class) as top pixels return (higher = better)", |s| &s.insertion_curve),
        ],
        "fraction of pixels",
        "p(class)",
    );
    write("curves.png", &crate::render::encode_png(&chart).map_err(|e| CliError::Invalid(e.to_string()))?)
}
