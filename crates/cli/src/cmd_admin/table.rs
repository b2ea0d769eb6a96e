//! Human output of `cloudproxy admin`: aligned tables and label/value blocks built from the
//! API's answers, read as the API's own types ([`cloudproxy_api`]; fields they do not know
//! are ignored, so additive API changes do not break the CLI); `--json` prints the response
//! itself for scripts.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_width::UnicodeWidthStr as _;

/// Text from the API as it may reach a terminal: control characters (ESC, BEL, C1, and with
/// `keep_newlines` false also newline and tab) and bidirectional overrides are shown as
/// `\u{1b}`-style escapes instead of being obeyed. Names come from whoever created the app,
/// and an ESC sequence in one could rewrite the operator's screen or window title.
pub(crate) fn terminal_safe(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Terminal columns a cell takes: CJK characters take two, combining marks none.
fn width(s: &str) -> usize {
    s.width()
}

/// One column of a [`Table`]: its header and how a row's cell is read from the row, declared
/// together so that a header cannot lose its value.
pub(super) type Column<T> = (&'static str, fn(&T) -> String);

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
pub(super) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// One line per item of `rows`, one cell per column.
    pub(super) fn of<T>(rows: &[T], columns: &[Column<T>]) -> Table {
        let rows = rows
            .iter()
            .map(|row| {
                let cell = |(_, cell): &Column<T>| terminal_safe(&cell(row), false).into_owned();
                columns.iter().map(cell).collect()
            })
            .collect();
        Table {
            headers: columns.iter().map(|&(header, _)| header).collect(),
            rows,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', w - width(cell)));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Label  value` lines with the values aligned.
pub(super) fn fields(pairs: &[(&str, String)]) -> String {
    let most = pairs.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| {
            let pad = " ".repeat(most - width(label));
            let value = terminal_safe(value, false);
            format!("{label}{pad}  {value}\n")
        })
        .collect()
}

/// An optional text field: `-` when absent.
pub(super) fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// Unix seconds as an RFC 3339 UTC date.
pub(super) fn date(unix: i64) -> String {
    cloudproxy_api::calendar::rfc3339(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ID/NAME/STATUS table of `rows`, rendered.
    fn id_name_status(rows: &[[&str; 3]]) -> String {
        Table::of(
            rows,
            &[
                ("ID", |r| r[0].to_string()),
                ("NAME", |r| r[1].to_string()),
                ("STATUS", |r| r[2].to_string()),
            ],
        )
        .render()
    }

    #[test]
    fn columns_align_without_trailing_spaces() {
        assert_eq!(
            id_name_status(&[["a1", "demo", "active"], ["b", "a longer name", "-"]]),
            "ID  NAME           STATUS\n\
             a1  demo           active\n\
             b   a longer name  -\n"
        );
    }

    #[test]
    fn cjk_names_align_by_display_width() {
        // 会議アプリ is five characters, ten columns.
        assert_eq!(
            id_name_status(&[["a1", "会議アプリ", "active"], ["b", "demo", "-"]]),
            "ID  NAME        STATUS\n\
             a1  会議アプリ  active\n\
             b   demo        -\n"
        );
        assert_eq!(
            fields(&[("名前", "x".into()), ("ID", "1".into())]),
            "名前  x\nID    1\n"
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}1m\u{202e}txt.exe\nnext";
        let out = Table::of(
            &[evil],
            &[("ID", |_| "a1".into()), ("NAME", |e| e.to_string())],
        )
        .render();
        assert_eq!(
            out,
            "ID  NAME\n\
             a1  x\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}1m\\u{202e}txt.exe\\u{a}next\n"
        );
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'));
        assert_eq!(
            fields(&[("Name", evil.into())]),
            "Name  x\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}1m\\u{202e}txt.exe\\u{a}next\n"
        );
        // Whole outputs keep their line structure.
        assert_eq!(terminal_safe("a\u{1b}b\nc", true), "a\\u{1b}b\nc");
        assert!(matches!(terminal_safe("会議 <b>", false), Cow::Borrowed(_)));
    }

    #[test]
    fn dates_and_absent_fields() {
        assert_eq!(date(0), "1970-01-01T00:00:00Z");
        assert_eq!(opt(&None), "-");
        assert_eq!(opt(&Some("x".into())), "x");
        assert_eq!(
            fields(&[("ID", "1".into()), ("Name", "n".into())]),
            "ID    1\nName  n\n"
        );
    }
}
