//! What the operator's commands (`status`, `audit`, `adopt`, `topology`) print, and how they
//! end. Standard output holds the report alone (logs go to standard error): a table whose lines
//! come as the command goes, or with `-o json` one document at the end, for scripts. The exit
//! code says how it ended (README: "The operator's toolbox").

use std::fmt::Display;
use std::io::Write as _;

use serde::Serialize;

/// The `apiVersion` of every JSON document: bumped only for a change that breaks a reader.
pub const API_VERSION: &str = "glusterfs-provisioner/v1";

/// Exit code of a command that ran and found what it reports (problems, volumes not whole).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code of a command that could not run (a usage error, an unreachable API server or
/// node): clap's own for usage errors.
pub const EXIT_FAILED: u8 = 2;

/// `-o`: how the report is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns and lines for people, printed as the command goes.
    #[default]
    Table,
    /// One JSON document at the end, for scripts (README: "The operator's toolbox").
    Json,
}

/// The `-o` flag each operator's command takes.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct OutputArgs {
    /// Output format: `table` for people, `json` for scripts (one document on stdout).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How a command that judges something ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything it looked at is as it should be: exit 0.
    Fine,
    /// It ran and found problems, in a line for standard error: exit [`EXIT_PROBLEMS`].
    Problems(String),
}

impl Outcome {
    /// [`Outcome::Fine`] when `count` is 0, else the problems as `describe` words them.
    pub fn unless(count: usize, describe: impl FnOnce(usize) -> String) -> Outcome {
        if count == 0 {
            Outcome::Fine
        } else {
            Outcome::Problems(describe(count))
        }
    }
}

/// Where a report goes: table lines to stdout as they come, or one document at the end.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    format: Format,
}

impl Printer {
    pub fn new(format: Format) -> Printer {
        Printer { format }
    }

    /// A line of the table; nothing in JSON, whose document carries the same.
    pub fn line(&self, line: impl Display) {
        if self.format == Format::Table {
            out(format_args!("{line}\n"));
        }
    }

    /// The end of the report: in JSON, the document `{"apiVersion", "kind", ...body}`.
    pub fn finish<T: Serialize>(&self, kind: &str, body: &T) {
        if self.format != Format::Json {
            return;
        }
        let document = Document {
            api_version: API_VERSION,
            kind,
            body,
        };
        // Plain data (strings, numbers, lists of them) always serializes.
        let text = serde_json::to_string_pretty(&document).expect("a report serializes");
        out(format_args!("{text}\n"));
    }
}

/// Writes to stdout. A reader that went away (`| head`) is not the command's failure: what it
/// does goes on, and the exit code still tells how it ended (`println!` would panic).
fn out(text: std::fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(text);
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a, T> {
    api_version: &'static str,
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_puts_its_version_and_kind_beside_the_body() {
        #[derive(Serialize)]
        struct Body {
            items: Vec<u8>,
        }
        let body = Body { items: vec![1, 2] };
        let document = Document {
            api_version: API_VERSION,
            kind: "Status",
            body: &body,
        };
        assert_eq!(
            serde_json::to_value(&document).unwrap(),
            serde_json::json!({"apiVersion": API_VERSION, "kind": "Status", "items": [1, 2]})
        );
    }

    #[test]
    fn only_a_count_of_zero_is_fine() {
        let words = |n: usize| format!("{n} left");
        assert_eq!(Outcome::unless(0, words), Outcome::Fine);
        assert_eq!(
            Outcome::unless(3, words),
            Outcome::Problems("3 left".into())
        );
    }
}
