//! `${{ namespace.name }}` expressions in job fields: `params.*` inside modules,
//! `shard.index` and `shard.count` in sharded jobs.

/// What a resolver says about one reference.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Substitute this text.
    Value(String),
    /// Leave the expression for a later phase.
    Keep,
    /// Not a reference this phase or any later one knows.
    Unknown,
}

/// An expression that could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub struct ExprError {
    pub expression: String,
    pub reason: &'static str,
}

/// Expands every `${{ ns.name }}` in `text`.
///
/// # Errors
/// The first malformed or unknown expression.
pub fn expand(text: &str, resolve: &dyn Fn(&str, &str) -> Lookup) -> Result<String, ExprError> {
    if !text.contains("${{") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err(ExprError {
                expression: rest[start..].to_owned(),
                reason: "`${{` without a closing `}}`",
            });
        };
        let inner = after[..end].trim();
        let whole = &rest[start..start + 3 + end + 2];
        let Some((ns, name)) = inner.split_once('.') else {
            return Err(ExprError {
                expression: whole.to_owned(),
                reason: "expected `namespace.name`, e.g. `params.src` or `shard.index`",
            });
        };
        match resolve(ns.trim(), name.trim()) {
            Lookup::Value(v) => out.push_str(&v),
            Lookup::Keep => out.push_str(whole),
            Lookup::Unknown => {
                return Err(ExprError {
                    expression: whole.to_owned(),
                    reason: "unknown reference",
                });
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ns: &str, name: &str) -> Lookup {
        match (ns, name) {
            ("params", "src") => Lookup::Value("lib".into()),
            ("shard", _) => Lookup::Keep,
            _ => Lookup::Unknown,
        }
    }

    #[test]
    fn expands_and_keeps() {
        assert_eq!(
            expand("a ${{ params.src }}/x ${{shard.index}}", &params),
            Ok("a lib/x ${{shard.index}}".into())
        );
        assert_eq!(expand("plain", &params), Ok("plain".into()));
    }

    #[test]
    fn reports_bad_expressions() {
        assert_eq!(
            expand("${{ params.nope }}", &params).unwrap_err().reason,
            "unknown reference"
        );
        assert!(expand("${{ params.src", &params).is_err());
        assert!(expand("${{ src }}", &params).is_err());
    }
}
