//! How commands print: a table for people (colour on a terminal only, `NO_COLOR` honoured),
//! or the JSON a script reads (`-o json`). Amounts are shown in major units with their unit
//! (`12.50 EUR`), from the exponent the node reports.

use std::io::IsTerminal as _;

use wasmpay_protocol::money::format_major;

/// What a command prints (`-o`, `--output`, or `WASMPAY_OUTPUT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and sentences, for people.
    #[default]
    Table,
    /// The API's JSON, one document per answer, for scripts.
    Json,
}

/// Whether to colour what goes to standard output: only on a terminal, and never when
/// `NO_COLOR` is set to anything (no-color.org).
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// `text` in green (an approval), red (a decline or refusal) or yellow (retry), when colouring.
pub fn tinted(text: &str, status: &str) -> String {
    if !colour() {
        return text.to_owned();
    }
    let code = match status {
        "approved" | "authorized" | "captured" | "voided" | "refunded" | "settled" | "quoted" | "ok" => "32",
        "error" => "33",
        _ => "31",
    };
    format!("\u{1b}[{code}m{text}\u{1b}[0m")
}

/// `minor_units` of a unit with `exponent` decimals, and its code: `12.50 EUR`; the bare minor
/// units when the exponent is unknown.
pub fn amount(minor_units: i64, exponent: Option<u8>, unit: &str) -> String {
    match exponent {
        Some(exponent) => format!("{} {unit}", format_major(minor_units, exponent)),
        None => format!("{minor_units} (minor units) {unit}"),
    }
}

/// Rows printed as aligned columns under a header, numbers (cells starting with a digit or a
/// minus) aligned right.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with `header`.
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        Table { rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()] }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows.iter().filter_map(|row| row.get(column)).map(|cell| cell.chars().count()).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| {
                    let numeric =
                        index > 0 && cell.starts_with(|c: char| c.is_ascii_digit() || c == '-') && cell != "-";
                    if numeric { format!("{cell:>width$}") } else { format!("{cell:<width$}") }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_numbers_go_right() {
        let mut table = Table::new(["account", "balance"]);
        table.row(vec!["alice".into(), "200.00 EUR".into()]);
        table.row(vec!["a-much-longer-name".into(), "5.00 EUR".into()]);
        assert_eq!(
            table.render(),
            "account             balance\nalice               200.00 EUR\na-much-longer-name    5.00 EUR\n"
        );
        assert_eq!(amount(1_250, Some(2), "EUR"), "12.50 EUR");
        assert_eq!(amount(4, Some(0), "ACME"), "4 ACME");
    }
}
