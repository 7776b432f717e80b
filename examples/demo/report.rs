//! Output: aligned tables, optional colour, and the checks that decide the exit code.

use std::io::IsTerminal as _;

/// ANSI styling, on only when stdout is a terminal and `NO_COLOR` is unset.
#[derive(Clone, Copy)]
pub(crate) struct Style {
    color: bool,
}

impl Style {
    pub(crate) fn detect() -> Self {
        Self {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub(crate) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    pub(crate) fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn red(self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub(crate) fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }

    /// A section heading.
    pub(crate) fn section(self, step: &str, title: &str) {
        println!();
        println!("{} {}", self.cyan(step), self.bold(title));
    }
}

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table of plain-text cells, printed with aligned columns and a rule under the header.
pub(crate) struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub(crate) fn print(&self, style: Style) {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::from("  ");
            for (i, (w, (_, align))) in widths.iter().zip(&self.columns).enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = " ".repeat(w - width(cell).min(*w));
                let last = i + 1 == widths.len();
                match align {
                    Align::Left if last => out.push_str(cell),
                    Align::Left => out.push_str(&format!("{cell}{pad}")),
                    Align::Right => out.push_str(&format!("{pad}{cell}")),
                }
                if !last {
                    out.push_str("  ");
                }
            }
            out.trim_end().to_string()
        };
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        println!("{}", style.bold(&line(&header)));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("{}", style.dim(&line(&rule)));
        for row in &self.rows {
            println!("{}", line(row));
        }
    }
}

/// What the demo verified. Any failure makes the demo exit non-zero.
#[derive(Default)]
pub(crate) struct Checks {
    items: Vec<(String, bool, String)>,
}

impl Checks {
    /// Records a check, and prints a failure at once (with what was expected and seen).
    pub(crate) fn check(
        &mut self,
        style: Style,
        ok: bool,
        what: impl Into<String>,
        detail: String,
    ) {
        let what = what.into();
        if !ok {
            println!("  {} {what}: {detail}", style.red("CHECK FAILED:"));
        }
        self.items.push((what, ok, detail));
    }

    pub(crate) fn failed(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(what, _, _)| what.as_str())
            .collect()
    }

    pub(crate) fn print(&self, style: Style) {
        let width = self
            .items
            .iter()
            .map(|(w, _, _)| w.chars().count())
            .max()
            .unwrap_or(0);
        for (what, ok, detail) in &self.items {
            let mark = if *ok {
                style.green("ok  ")
            } else {
                style.red("FAIL")
            };
            let pad = " ".repeat(width - what.chars().count());
            println!("  {mark}  {what}{pad}  {}", style.dim(detail));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}
