//! Splitting a migration script into statements with the SQL tokenizer (so semicolons in
//! strings, comments, dollar-quoted bodies and trigger bodies do not split), keeping each
//! statement's original text and line.

use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

/// One statement of a script, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// 1-based line of its first token.
    pub line: usize,
    /// 1-based column of its first token.
    pub column: usize,
    /// The statement's text, without the terminating semicolon.
    pub text: String,
}

/// Splits `sql` at top-level semicolons. A `CREATE TRIGGER … BEGIN … END` body stays one
/// statement.
///
/// # Errors
/// A tokenizer error (unterminated string or comment) with its line.
pub fn split(dialect: &dyn Dialect, sql: &str) -> Result<Vec<Piece>, (usize, String)> {
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| (usize::try_from(e.location.line).unwrap_or(0), e.message))?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |loc: Location| -> usize {
        let line = usize::try_from(loc.line).unwrap_or(1).max(1);
        let Some(&start) = line_starts.get(line - 1) else {
            return sql.len();
        };
        let col = usize::try_from(loc.column).unwrap_or(1).max(1);
        sql[start..]
            .char_indices()
            .nth(col - 1)
            .map_or(sql.len(), |(i, _)| start + i)
    };
    let mut out = Vec::new();
    // The first significant token of the current statement, and what it is.
    let mut first: Option<Location> = None;
    let mut words: Vec<Keyword> = Vec::new();
    let mut depth = 0usize;
    let mut last_end: Option<Location> = None;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(
                Whitespace::Space
                | Whitespace::Newline
                | Whitespace::Tab
                | Whitespace::SingleLineComment { .. }
                | Whitespace::MultiLineComment(_),
            ) => continue,
            Token::SemiColon if depth == 0 => {
                if let (Some(start), Some(end)) = (first, last_end) {
                    out.push(Piece {
                        line: usize::try_from(start.line).unwrap_or(0),
                        column: usize::try_from(start.column).unwrap_or(0),
                        text: sql[offset(start)..offset(end)].to_owned(),
                    });
                }
                first = None;
                words.clear();
                last_end = None;
                continue;
            }
            Token::Word(w) => {
                if words.len() < 4 {
                    words.push(w.keyword);
                }
                let in_trigger =
                    words.first() == Some(&Keyword::CREATE) && words.contains(&Keyword::TRIGGER);
                if in_trigger && (w.keyword == Keyword::BEGIN || w.keyword == Keyword::CASE) {
                    depth += 1;
                } else if in_trigger && w.keyword == Keyword::END {
                    depth = depth.saturating_sub(1);
                }
            }
            _ => {}
        }
        if first.is_none() {
            first = Some(t.span.start);
        }
        last_end = Some(t.span.end);
    }
    if let (Some(start), Some(end)) = (first, last_end) {
        out.push(Piece {
            line: usize::try_from(start.line).unwrap_or(0),
            column: usize::try_from(start.column).unwrap_or(0),
            text: sql[offset(start)..offset(end)].to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};

    fn texts(d: &dyn Dialect, sql: &str) -> Vec<(usize, String)> {
        split(d, sql)
            .expect("splits")
            .into_iter()
            .map(|p| (p.line, p.text))
            .collect()
    }

    #[test]
    fn semicolons_in_strings_comments_and_bodies_do_not_split() {
        let sql = "-- a; comment\nCREATE TABLE a (x TEXT DEFAULT ';');\n\n/* ; */ INSERT INTO a VALUES ('b;c');\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nSELECT 2";
        assert_eq!(
            texts(&PostgreSqlDialect {}, sql),
            vec![
                (2, "CREATE TABLE a (x TEXT DEFAULT ';')".to_owned()),
                (4, "INSERT INTO a VALUES ('b;c')".to_owned()),
                (
                    5,
                    "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql".to_owned()
                ),
                (6, "SELECT 2".to_owned()),
            ]
        );
    }

    #[test]
    fn trigger_bodies_stay_whole() {
        let sql = "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = CASE WHEN 1 THEN 'y' END;\n  DELETE FROM b;\nEND;\nDROP TABLE c;";
        let got = texts(&SQLiteDialect {}, sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.ends_with("END"), "{got:?}");
        assert_eq!(got[1], (5, "DROP TABLE c".to_owned()));
    }

    #[test]
    fn comments_only_is_no_statement() {
        assert!(texts(&SQLiteDialect {}, "-- nothing\n/* here */\n;").is_empty());
    }
}
