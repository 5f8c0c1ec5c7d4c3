//! `maestro policy fmt`: a canonical layout for Rego files that never changes meaning.
//!
//! The formatter works on the engine's own lexer and keeps every token and every line
//! break between tokens (Rego separates body expressions by newlines): it re-indents with
//! tabs by bracket depth, normalises spaces around operators, commas and colons, trims
//! trailing space, collapses runs of blank lines to one, and keeps comments (one space
//! before a trailing comment). Before anything is returned, the result is lexed again and
//! must give the same tokens, and it must still parse.

use regorus::unstable::{Lexer, Source, TokenKind};

/// One token: kind, text and byte range.
#[derive(Debug, Clone)]
struct Tok {
    kind: TokenKind,
    text: String,
    start: usize,
    end: usize,
}

fn lex(path: &str, text: &str) -> Result<Vec<Tok>, String> {
    let source =
        Source::from_contents(path.to_owned(), text.to_owned()).map_err(|e| e.to_string())?;
    let mut lexer = Lexer::new(&source);
    let mut out = Vec::new();
    loop {
        let t = lexer.next_token().map_err(|e| e.to_string())?;
        if matches!(t.0, TokenKind::Eof) {
            return Ok(out);
        }
        // A string's span is its contents: take the quotes along.
        let quoted = usize::from(matches!(t.0, TokenKind::String | TokenKind::RawString));
        let (start, end) = (t.1.start as usize - quoted, t.1.end as usize + quoted);
        out.push(Tok {
            kind: t.0,
            text: text.get(start..end).unwrap_or_default().to_owned(),
            start,
            end,
        });
    }
}

const SPACED: &[&str] = &[
    ":=", "=", "==", "!=", "<", "<=", ">", ">=", "|", "&", "+", "*", "/", "%",
];

const KEYWORDS: &[&str] = &[
    "as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null",
    "package", "some", "true", "with",
];

fn is(t: &Tok, s: &str) -> bool {
    matches!(t.kind, TokenKind::Symbol) && t.text == s
}

/// The space between two tokens on one line: "" or " ".
fn space(a: &Tok, b: &Tok, had_space: bool) -> &'static str {
    let sym = |t: &Tok, set: &[&str]| {
        matches!(t.kind, TokenKind::Symbol) && set.contains(&t.text.as_str())
    };
    if sym(b, &[",", ";", ")", "]"]) || is(b, ":") || is(a, ".") || is(b, ".") {
        return "";
    }
    if sym(a, &["(", "["]) {
        return "";
    }
    if sym(a, &[",", ";", ":"]) || sym(a, SPACED) || sym(b, SPACED) {
        return " ";
    }
    // A call or a reference: `f(x)`, `x[i]`, `f(x)[0]` (not `in [1]`, `not (x)`).
    let name = matches!(a.kind, TokenKind::Ident) && !KEYWORDS.contains(&a.text.as_str());
    if sym(b, &["(", "["]) && (name || sym(a, &[")", "]"])) {
        return "";
    }
    if had_space { " " } else { "" }
}

/// Formats one Rego file.
///
/// # Errors
/// A file that does not lex or parse, with the engine's message; or, as a safeguard, a
/// result whose tokens differ from the input's (never expected).
pub fn format(path: &str, text: &str, rego_v0: bool) -> Result<String, String> {
    let toks = lex(path, text)?;
    let mut out = String::with_capacity(text.len() + 64);
    // Open brackets, each with the indent of the line it was opened on: a line is indented
    // one level deeper than the line of its innermost open bracket, and a line that starts
    // by closing a bracket lines up with the line that opened it (as gofmt and opa fmt do).
    let mut open: Vec<usize> = Vec::new();
    let mut line_indent = 0;
    let mut prev: Option<&Tok> = None;
    let mut pos = 0;
    for t in &toks {
        let gap = &text[pos..t.start];
        let closing =
            matches!(t.kind, TokenKind::Symbol) && ["}", "]", ")"].contains(&t.text.as_str());
        let indent = match open.last() {
            Some(&i) if closing => i,
            Some(&i) => i + 1,
            None => 0,
        };
        if gap.contains('\n') || prev.is_none() {
            line_indent = indent;
        }
        emit_gap(&mut out, gap, prev.is_none(), indent, |had_space| {
            prev.map_or("", |p| space(p, t, had_space))
        });
        out.push_str(&t.text);
        if matches!(t.kind, TokenKind::Symbol) {
            match t.text.as_str() {
                "{" | "[" | "(" => open.push(line_indent),
                "}" | "]" | ")" => {
                    open.pop();
                }
                _ => {}
            }
        }
        prev = Some(t);
        pos = t.end;
    }
    // Trailing comments, then exactly one final newline.
    emit_gap(&mut out, &text[pos..], prev.is_none(), 0, |_| "");
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');

    // The safeguards: the same tokens, and it still parses.
    let again = lex(path, &out)?;
    let same = again.len() == toks.len() && again.iter().zip(&toks).all(|(a, b)| a.text == b.text);
    if !same {
        return Err(format!(
            "{path}: formatting would change the tokens; the file is left as it is"
        ));
    }
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(rego_v0);
    engine
        .add_policy(path.to_owned(), out.clone())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes the whitespace and comments between two tokens.
fn emit_gap(
    out: &mut String,
    gap: &str,
    at_start: bool,
    indent: usize,
    inline: impl FnOnce(bool) -> &'static str,
) {
    let lines: Vec<&str> = gap.split('\n').collect();
    if lines.len() == 1 {
        // Same line: a comment cannot be here (it runs to the end of the line).
        out.push_str(inline(!gap.is_empty()));
        return;
    }
    // The rest of the previous token's line: a trailing comment, if any.
    if let Some(c) = lines[0].find('#') {
        if !at_start {
            out.push(' ');
        }
        out.push_str(lines[0][c..].trim_end());
    }
    let mut blank = 0;
    for line in &lines[1..lines.len() - 1] {
        let l = line.trim();
        if l.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank > 0 {
                out.push('\n');
            }
        }
        blank = 0;
        out.push_str(&"\t".repeat(indent));
        out.push_str(l);
    }
    if !out.is_empty() {
        out.push('\n');
        if blank > 0 {
            out.push('\n');
        }
    }
    out.push_str(&"\t".repeat(indent));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_normalised_and_meaning_kept() {
        let src = "package   main\nimport rego.v1\n\n\n\n# why\ndeny contains msg if {   # trailing\n    some rc in input.resource_changes\n  rc.type==\"aws_s3_bucket\"   \n      x := {\"a\":1,\"b\" : [1,2]}\n    msg := sprintf( \"%s\" , [rc.address] )\n}\n";
        let got = format("p.rego", src, false).expect("formats");
        assert_eq!(
            got,
            "package main\nimport rego.v1\n\n# why\ndeny contains msg if { # trailing\n\tsome rc in input.resource_changes\n\trc.type == \"aws_s3_bucket\"\n\tx := {\"a\": 1, \"b\": [1, 2]}\n\tmsg := sprintf(\"%s\", [rc.address])\n}\n"
        );
        // Idempotent.
        assert_eq!(format("p.rego", &got, false).expect("again"), got);
    }

    #[test]
    fn raw_strings_and_nested_blocks_keep_their_text() {
        let src = "package p\n\nr := `a\n   b` if {\n  every x in [1] {\n x > 0\n  }\n}\n";
        let got = format("p.rego", src, false).expect("formats");
        assert_eq!(
            got,
            "package p\n\nr := `a\n   b` if {\n\tevery x in [1] {\n\t\tx > 0\n\t}\n}\n"
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_an_error() {
        assert!(format("p.rego", "package p\n\nallow if {\n", false).is_err());
    }
}
