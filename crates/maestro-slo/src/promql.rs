//! Just enough PromQL to check an event query: a vector selector (`metric{label="v",…}`)
//! that Maestro wraps in `sum(rate(…[window]))`, or a full query carrying a `{{.window}}`
//! placeholder where the range goes (the convention Sloth users know).

/// The placeholder forms accepted for the range.
const PLACEHOLDERS: [&str; 2] = ["{{.window}}", "{{ .window }}"];

pub(crate) fn has_window_placeholder(q: &str) -> bool {
    PLACEHOLDERS.iter().any(|p| q.contains(p))
}

pub(crate) fn fill_window(q: &str, window: &str) -> String {
    PLACEHOLDERS
        .iter()
        .fold(q.to_owned(), |q, p| q.replace(p, window))
}

/// Whether `q` can be an event query; the reason when not.
pub(crate) fn check_events(q: &str) -> Result<(), String> {
    if q.is_empty() {
        return Err("is empty".to_owned());
    }
    if q.len() > 4096 {
        return Err("is longer than 4096 bytes".to_owned());
    }
    if has_window_placeholder(q) {
        return balanced(q);
    }
    selector(q).map_err(|why| format!("`{q}` is not a metric selector: {why}"))
}

/// Brackets and quotes pair up (a query with a placeholder is otherwise Prometheus' to
/// judge; `promtool check rules` does).
fn balanced(q: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => skip_string(&mut chars, c)?,
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = stack.pop();
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                // `{{.window}}`'s braces pair with each other like any others.
                if open != Some(want) {
                    return Err(format!("unbalanced `{c}` in `{q}`"));
                }
            }
            _ => {}
        }
    }
    if let Some(c) = stack.pop() {
        return Err(format!("unclosed `{c}` in `{q}`"));
    }
    Ok(())
}

fn skip_string(chars: &mut std::str::Chars<'_>, quote: char) -> Result<(), String> {
    while let Some(c) = chars.next() {
        if c == '\\' && quote != '`' {
            chars.next();
        } else if c == quote {
            return Ok(());
        }
    }
    Err(format!("unterminated string (opened with {quote})"))
}

fn name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `metric`, `metric{…}` or `{…}` with label matchers `name op "value"`.
fn selector(q: &str) -> Result<(), String> {
    let c: Vec<char> = q.chars().collect();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while c.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    let has_name = c.first().is_some_and(|&x| name_start(x));
    while c.get(i).is_some_and(|&x| name_char(x)) {
        i += 1;
    }
    ws(&mut i);
    if i == c.len() {
        return if has_name {
            Ok(())
        } else {
            Err("no metric name".to_owned())
        };
    }
    if c[i] != '{' {
        return Err(format!(
            "expected `{{label=\"value\",…}}` after the metric name, found `{}`",
            c[i]
        ));
    }
    i += 1;
    let mut matchers = 0;
    loop {
        ws(&mut i);
        match c.get(i) {
            None => return Err("unclosed `{`".to_owned()),
            Some('}') => {
                i += 1;
                break;
            }
            Some(&x) if x.is_ascii_alphabetic() || x == '_' => {}
            Some(&x) => return Err(format!("expected a label name, found `{x}`")),
        }
        let start = i;
        while c
            .get(i)
            .is_some_and(|&x| x.is_ascii_alphanumeric() || x == '_')
        {
            i += 1;
        }
        let label: String = c[start..i].iter().collect();
        ws(&mut i);
        let op_start = i;
        while c.get(i).is_some_and(|&x| "=!~".contains(x)) {
            i += 1;
        }
        let op: String = c[op_start..i].iter().collect();
        if !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
            return Err(format!(
                "label `{label}`: `{op}` is not a matcher (=, !=, =~, !~)"
            ));
        }
        ws(&mut i);
        let quote = match c.get(i) {
            Some(&x) if "\"'`".contains(x) => x,
            _ => {
                return Err(format!(
                    "label `{label}`: the value must be a quoted string"
                ));
            }
        };
        i += 1;
        loop {
            match c.get(i) {
                None => return Err(format!("label `{label}`: unterminated string")),
                Some('\\') if quote != '`' => i += 2,
                Some(&x) if x == quote => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
        matchers += 1;
        ws(&mut i);
        match c.get(i) {
            Some(',') => i += 1,
            Some('}') => {}
            Some(&x) => return Err(format!("expected `,` or `}}` after a matcher, found `{x}`")),
            None => return Err("unclosed `{`".to_owned()),
        }
    }
    ws(&mut i);
    if i != c.len() {
        return Err(format!(
            "unexpected `{}` after the selector",
            c[i..].iter().collect::<String>()
        ));
    }
    if !has_name && matchers == 0 {
        return Err("no metric name and no label matcher".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        for ok in [
            "http_requests_total",
            "http_requests_total{}",
            r#"http_requests_total{job="checkout", code=~"5.."}"#,
            r#"{__name__="x", a!='b\'c'}"#,
            "job:requests:rate5m{a=`x}y`,}",
        ] {
            assert_eq!(selector(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("sum(rate(x[5m]))", "found `(`"),
            (r#"x{a="b"} > 0"#, "unexpected"),
            (r#"x{a=="b"}"#, "not a matcher"),
            (r#"x{a="b}"#, "unterminated"),
            ("x{a=b}", "quoted string"),
            ("{}", "no metric name"),
            (r#"x{a="b" c="d"}"#, "expected `,`"),
        ] {
            let e = selector(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn placeholders() {
        let q = "sum(rate(x{a=\"}\"}[{{.window}}])) by (b)";
        assert_eq!(check_events(q), Ok(()));
        assert_eq!(fill_window(q, "5m"), "sum(rate(x{a=\"}\"}[5m])) by (b)");
        assert!(check_events("sum(rate(x[{{.window}}])").is_err());
    }
}
