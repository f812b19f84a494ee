//! `rwp dataset inspect`: a job's own data checked before it trains, on
//! this machine or (`--on-workers`) by a worker of the service: its kind,
//! classes, samples per split, a model input's shape, and every sample that
//! cannot be read or decoded.

use std::io::Write;

use rwp_data::inspect::{inspect, layout};
use rwp_sdk::JobFile;
use rwp_spec::{DataReport, DataSource, DatasetKind};

use super::{to_json, Connection};
use crate::cli::{DatasetCommand, DatasetInspectArgs};
use crate::error::CliError;

/// Unreadable samples printed before "and N more".
const SHOWN: usize = 20;

pub async fn run(
    command: DatasetCommand,
    connect: impl FnOnce() -> Result<Connection, CliError>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    match command {
        DatasetCommand::Inspect(args) if args.on_workers => {
            if args.job.is_none() {
                return Err(CliError::Usage(
                    "--on-workers needs --job FILE: the job file's [data] names the locations the workers read"
                        .to_owned(),
                ));
            }
            let (kind, data) = dataset(&args)?;
            let client = connect()?.connect().await?;
            let report = client.inspect_data(kind, &data, !args.no_decode).await?;
            print_report(&args, &report, out)
        }
        DatasetCommand::Inspect(args) => inspect_command(&args, out),
    }
}

/// The dataset the arguments name: a job file's, or the one a folder holds.
fn dataset(args: &DatasetInspectArgs) -> Result<(DatasetKind, DataSource), CliError> {
    if let Some(path) = &args.job {
        let (_, spec) = JobFile::read(path).and_then(JobFile::into_spec).map_err(|e| CliError::Usage(e.to_string()))?;
        let data = spec.data.ok_or_else(|| {
            CliError::Usage(format!(
                "{} trains on the built-in dataset {}; only a job's own data ([data]) can be inspected",
                path.display(),
                spec.dataset
            ))
        })?;
        return Ok((spec.dataset, data));
    }
    let location = args.location.as_deref().unwrap_or_default();
    let (found, data) = layout(location, args.image_size).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok((args.kind.unwrap_or(found), data))
}

fn inspect_command(args: &DatasetInspectArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    if let Some(kind) = args.kind.filter(|k| !k.is_own_data()) {
        return Err(CliError::Usage(format!("--kind {kind}: must be image-folder, tar-shards or tensors")));
    }
    let (kind, data) = dataset(args)?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let decoder: Option<&rwp_data::inspect::Decoder> = (!args.no_decode).then_some(&rwp_images::decoded_size);
    let report = inspect(kind, &data, decoder, threads).map_err(|e| CliError::Usage(e.to_string()))?;
    print_report(args, &report, out)
}

/// Prints `report`; the exit status is 1 when a sample is unreadable.
fn print_report(args: &DatasetInspectArgs, report: &DataReport, out: &mut dyn Write) -> Result<u8, CliError> {
    if args.json {
        writeln!(out, "{}", to_json(report)?)?;
    } else {
        out.write_all(report_text(report).as_bytes())?;
    }
    Ok(u8::from(!report.unreadable.is_empty()))
}

/// `12,345`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report_text(report: &DataReport) -> String {
    let mut text = format!("kind        {}\n", report.kind);
    let names = &report.class_names;
    let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
    let more =
        if names.len() > shown.len() { format!(", ... ({} more)", names.len() - shown.len()) } else { String::new() };
    text += &format!("classes     {} ({}{more})\n", names.len(), shown.join(", "));
    for split in &report.splits {
        let name = split.field.trim_start_matches("data.");
        text += &format!(
            "{name:<12}{} samples in {} files  {}\n",
            thousands(split.samples as usize),
            thousands(split.files as usize),
            split.location
        );
    }
    let shape: Vec<String> = report.shape.iter().map(u32::to_string).collect();
    text += &format!("input       {}", shape.join(" × "));
    if let Some([height, width]) = report.first_image {
        text += &format!(" (the first training image is {width} × {height} as stored)");
    }
    text.push('\n');
    if report.kind.holds_images() && !report.decoded {
        text += "unreadable  not checked (--no-decode): images were listed, not decoded\n";
    } else if report.unreadable.is_empty() {
        text += "unreadable  none\n";
    } else {
        text += &format!("unreadable  {}:\n", thousands(report.unreadable.len()));
        for bad in report.unreadable.iter().take(SHOWN) {
            text += &format!("  {}: {}\n", bad.sample, bad.reason);
        }
        if report.unreadable.len() > SHOWN {
            text += &format!("  and {} more (--json lists them all)\n", report.unreadable.len() - SHOWN);
        }
    }
    text += &format!("digest      {}\n", report.summary.digest);
    text
}
