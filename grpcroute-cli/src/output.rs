//! Human output (aligned tables, colour only on a terminal) and JSON output.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// ANSI colours, or none: on only when stdout is a terminal and `NO_COLOR` is unset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    color: bool,
}

/// A colour for a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Paint {
    Plain,
    Good,
    Bad,
    Warn,
    Bold,
    Dim,
}

impl Style {
    pub(crate) fn detect() -> Self {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Self { color }
    }

    pub(crate) fn paint(self, paint: Paint, text: &str) -> String {
        let code = match paint {
            Paint::Plain => return text.to_string(),
            Paint::Good => "32",
            Paint::Bad => "31",
            Paint::Warn => "33",
            Paint::Bold => "1",
            Paint::Dim => "2",
        };
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A table whose columns are padded to their widest cell; numeric columns align right.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<(String, Paint)>>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is right-aligned.
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<(String, Paint)>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self, style: Style, out: &mut String) {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, (text, _)) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let header: Vec<(String, Paint)> = self
            .headers
            .iter()
            .map(|h| (h.to_string(), Paint::Bold))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (text, paint)) in row.iter().enumerate().take(columns) {
                let pad = " ".repeat(widths[i] - text.chars().count());
                let last = i + 1 == row.len().min(columns);
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(&style.paint(*paint, text));
                } else {
                    line.push_str(&style.paint(*paint, text));
                    if !last {
                        line.push_str(&pad);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// A cell without colour.
pub(crate) fn plain(text: impl Into<String>) -> (String, Paint) {
    (text.into(), Paint::Plain)
}

/// A message on one line: the source snippets that YAML and regex errors draw under a
/// message (`--> <input>:4:5`, `3 | spec: [`, `^`) are dropped, the other lines joined.
pub(crate) fn one_line(message: &str) -> String {
    let snippet = |line: &str| {
        let t = line.trim();
        let numbered = t
            .split_once(" |")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        t.is_empty()
            || t.starts_with("-->")
            || t.starts_with('|')
            || numbered
            || t.bytes().all(|b| b == b'^' || b == b'~' || b == b' ')
    };
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default().trim_end().to_string();
    lines.filter(|l| !snippet(l)).fold(first, |mut out, line| {
        out.push(' ');
        out.push_str(line.trim());
        out
    })
}

/// `part / whole` as a percentage with one decimal.
pub(crate) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Writes to stdout, ignoring a closed pipe (`grpcroute check | head`).
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Pretty-printed JSON and a newline.
pub(crate) fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(mut text) => {
            text.push('\n');
            print(&text);
        }
        // Only maps with non-string keys fail to serialize; these outputs have none.
        Err(e) => eprintln!("grpcroute: cannot encode JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut t = Table::new(&["NAME", ">CALLS", "NOTE"]);
        t.row(vec![plain("a"), plain("1000"), plain("x")]);
        t.row(vec![plain("longer"), plain("7"), plain("")]);
        let mut out = String::new();
        t.render(Style { color: false }, &mut out);
        assert_eq!(
            out,
            "NAME    CALLS  NOTE\na        1000  x\nlonger      7\n"
        );
    }

    #[test]
    fn no_escape_codes_without_colour() {
        assert_eq!(Style { color: false }.paint(Paint::Bad, "False"), "False");
        assert_eq!(
            Style { color: true }.paint(Paint::Bad, "False"),
            "\x1b[31mFalse\x1b[0m"
        );
        assert_eq!(percent(1, 3), "33.3%");
    }

    #[test]
    fn messages_fold_to_one_line_without_snippets() {
        let yaml = "invalid YAML (from line 11): error: line 4 column 5: did not find ','\n --> <input>:4:5\n  |\n3 | metadata: {name: x\n4 | spec: [\n  |     ^ did not find ','";
        assert_eq!(
            one_line(yaml),
            "invalid YAML (from line 11): error: line 4 column 5: did not find ','"
        );
        let regex = "invalid regular expression: regex parse error:\n    (unclosed\n    ^\nerror: unclosed group";
        assert_eq!(
            one_line(regex),
            "invalid regular expression: regex parse error: (unclosed error: unclosed group"
        );
    }
}
