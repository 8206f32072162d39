//! `--set KEY=VALUE`: an override is merged into the YAML tree before it is read,
//! so it takes the same keys, types and checks as the file, and its problems name
//! the argument.

use super::yaml::{self, Node, Origin, Value};

/// `--set a.b.c=value`: the value is read as YAML, so `[parquet, csv]` and `4` keep their types.
pub(super) fn apply_override(root: &mut Node, arg: &str) -> std::result::Result<(), String> {
    let Some((key, raw)) = arg.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. `--set rfm.bins=4`".into());
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(format!("`{key}` is not a dotted key path like `cohorts.grain`"));
    }
    let mut value = match yaml::parse(raw) {
        Ok(Some(node)) => node,
        Ok(None) => Node {
            value: Value::Scalar {
                text: String::new(),
                quoted: false,
            },
            origin: Origin::Set(arg.into()),
        },
        Err(e) => return Err(format!("the value of `{key}` is not valid YAML: {}", e.message)),
    };
    set_origin(&mut value, &Origin::Set(arg.into()));
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let Value::Map(entries) = &mut node.value else {
            return Err(format!(
                "`{}` is not a mapping, so `{key}` cannot be set",
                parts[..i].join(".")
            ));
        };
        let pos = match entries.iter().position(|(k, _)| k == part) {
            Some(pos) => pos,
            None => {
                entries.push((
                    part.to_string(),
                    Node {
                        value: Value::Map(Vec::new()),
                        origin: Origin::Set(arg.into()),
                    },
                ));
                entries.len() - 1
            }
        };
        if i + 1 == parts.len() {
            entries[pos].1 = value;
            return Ok(());
        }
        if entries[pos].1.is_null() {
            entries[pos].1.value = Value::Map(Vec::new());
        }
        node = &mut entries[pos].1;
    }
    Ok(())
}

fn set_origin(node: &mut Node, origin: &Origin) {
    node.origin = origin.clone();
    match &mut node.value {
        Value::Scalar { .. } => {}
        Value::Seq(items) => items.iter_mut().for_each(|n| set_origin(n, origin)),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, n)| set_origin(n, origin)),
    }
}
