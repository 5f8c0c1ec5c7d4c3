//! flagd's custom JsonLogic operators: `fractional` (a stable percentage split by a
//! MurmurHash3 of the flag key and the targeting key) and `sem_ver` (SemVer comparison).

use datalogic_rs::{ContextStack, Error, Evaluator, Operator, Result};
use serde_json::Value;

/// `{"fractional": [BUCKET_BY?, ["variant", weight], …]}`: the bucket of
/// `BUCKET_BY` (default: `$flagd.flagKey` + `targetingKey`) — MurmurHash3 (x86, 32 bits,
/// seed 0) of its bytes as a signed 32-bit number, its absolute value over `i32::MAX`, times
/// the sum of the weights — falls in one variant's range, in the order given. The same
/// inputs always land in the same variant, as in flagd.
pub(crate) struct Fractional;

impl Operator for Fractional {
    fn evaluate(
        &self,
        args: &[Value],
        context: &mut ContextStack,
        evaluator: &dyn Evaluator,
    ) -> Result<Value> {
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(evaluator.evaluate(a, context)?);
        }
        let (by, dist) = match values.first() {
            Some(Value::String(s)) => (s.clone(), &values[1..]),
            _ => {
                let frame = context.root();
                let root = frame.data();
                let key = root["$flagd"]["flagKey"].as_str().unwrap_or_default();
                let Some(targeting) = root["targetingKey"].as_str() else {
                    return Err(Error::InvalidArguments(
                        "fractional: the context has no targetingKey to bucket by".to_owned(),
                    ));
                };
                (format!("{key}{targeting}"), &values[..])
            }
        };
        let mut weights = Vec::with_capacity(dist.len());
        for d in dist {
            let (Some(name), weight) = (
                d.get(0).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                d.get(1).and_then(Value::as_f64).unwrap_or(1.0),
            ) else {
                return Err(Error::InvalidArguments(
                    "fractional: each distribution is [\"variant\", weight]".to_owned(),
                ));
            };
            weights.push((name, weight.max(0.0)));
        }
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        if weights.is_empty() || total <= 0.0 {
            return Ok(Value::Null);
        }
        let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(by.as_bytes()), 0)
            .map_err(|e| Error::InvalidArguments(format!("fractional: {e}")))?;
        #[expect(
            clippy::cast_possible_wrap,
            reason = "flagd reads the hash as an int32"
        )]
        let signed = hash as i32;
        let ratio = f64::from(signed).abs() / f64::from(i32::MAX);
        let bucket = ratio * total;
        let mut end = 0.0;
        for (name, w) in &weights {
            end += w;
            if bucket < end {
                return Ok(Value::String(name.clone()));
            }
        }
        Ok(weights
            .last()
            .map_or(Value::Null, |(n, _)| Value::String(n.clone())))
    }
}

/// `{"sem_ver": [VERSION, OP, TARGET]}` with OP one of `=`, `!=`, `<`, `<=`, `>`, `>=`, `^`
/// (same major), `~` (same major and minor); a leading `v` is allowed. A value that is
/// not a version compares false.
pub(crate) struct SemVer;

fn version(v: &Value) -> Option<semver::Version> {
    let s = v.as_str()?.trim();
    semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok()
}

impl Operator for SemVer {
    fn evaluate(
        &self,
        args: &[Value],
        context: &mut ContextStack,
        evaluator: &dyn Evaluator,
    ) -> Result<Value> {
        if args.len() != 3 {
            return Err(Error::InvalidArguments(
                "sem_ver: [version, operator, version]".to_owned(),
            ));
        }
        let a = evaluator.evaluate(&args[0], context)?;
        let op = evaluator.evaluate(&args[1], context)?;
        let b = evaluator.evaluate(&args[2], context)?;
        let (Some(a), Some(b)) = (version(&a), version(&b)) else {
            return Ok(Value::Bool(false));
        };
        let r = match op.as_str().unwrap_or_default() {
            "=" => a == b,
            "!=" => a != b,
            "<" => a < b,
            "<=" => a <= b,
            ">" => a > b,
            ">=" => a >= b,
            "^" => a.major == b.major,
            "~" => a.major == b.major && a.minor == b.minor,
            other => {
                return Err(Error::InvalidArguments(format!(
                    "sem_ver: `{other}` is not =, !=, <, <=, >, >=, ^ or ~"
                )));
            }
        };
        Ok(Value::Bool(r))
    }
}
