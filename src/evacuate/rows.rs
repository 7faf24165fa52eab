//! What `evacuate` reports: a row per volume, in a table whose lines come as the run goes
//! (the plan, then a line for each volume once it is done), or in one JSON document at the
//! end (README: "Replacing and retiring nodes").

use std::fmt::Write as _;

use serde::Serialize;

/// One volume: where its brick on the node goes, how, and how that went.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Row {
    pub volume: String,
    /// `namespace/name` of the claim its PV is bound to.
    pub claim: Option<String>,
    /// The brick on the node, `node:path`.
    pub from: Option<String>,
    /// Its new place, `node:path`.
    pub to: Option<String>,
    pub kind: Kind,
    /// Why it is not moved or cannot be placed.
    pub why: Option<String>,
    pub state: State,
    /// Why it failed, was held, or its leftover was not removed.
    pub error: Option<String>,
    /// Seconds from its first step until its new brick was healed.
    pub heal_seconds: Option<u64>,
    /// Whether the old brick is gone from the node (a down node's stays until a run once it is
    /// back); `null` until it moved.
    pub old_brick_removed: Option<bool>,
}

/// What is done with a volume.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Kind {
    /// A copy added, healed, then the old brick removed (a live node's replicate volume).
    AddCopy,
    /// `replace-brick … commit force`, then healed.
    Replace,
    /// A copy an earlier run added: the old brick removed once it is healed.
    Finish,
    NotMoved,
    CannotPlace,
    /// A brick an earlier move left on the node (a killed run, a node that was down).
    Leftover,
    /// No brick on the node, but still healing from an earlier run: waited for first.
    Healing,
}

/// Where a volume is at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum State {
    /// Moved with `--apply`.
    Planned,
    /// Not moved: another volume cannot be placed, or an earlier move did not heal.
    Held,
    Moved,
    Failed,
    /// Not moved (it is not ours to move, or nothing can hold it): it stays on the node.
    Stays,
    /// A leftover removed.
    Removed,
    /// A leftover kept until its volume is whole.
    Kept,
    NotRemoved,
    /// An earlier move's heal waited for.
    Healed,
}

impl Row {
    /// A row of the plan.
    pub fn new(volume: &str, claim: Option<String>, kind: Kind) -> Row {
        Row {
            volume: volume.to_string(),
            claim,
            from: None,
            to: None,
            kind,
            why: None,
            state: match kind {
                Kind::NotMoved | Kind::CannotPlace => State::Stays,
                _ => State::Planned,
            },
            error: None,
            heal_seconds: None,
            old_brick_removed: None,
        }
    }

    /// A row that moves, once it is planned.
    pub fn moves(&self) -> bool {
        self.state == State::Planned
    }

    /// Why it fails the command, in a few words.
    pub fn trouble(&self) -> String {
        let why = self.why.as_deref().unwrap_or_default();
        let error = self.error.as_deref().unwrap_or_default();
        match (self.kind, self.state) {
            (Kind::CannotPlace, _) => format!("cannot be placed: {why}"),
            (Kind::NotMoved, _) => format!("not moved: {why}"),
            (_, State::Held) => format!("held: {error}"),
            (Kind::Healing, _) => format!("an earlier move did not heal: {error}"),
            (_, State::Kept) => "old brick left on the node: its volume is not whole".into(),
            (_, State::NotRemoved) => format!("old brick left on the node: {error}"),
            _ => format!("failed: {error}"),
        }
    }

    fn cells(&self) -> [String; 6] {
        let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let why = self.why.as_deref().unwrap_or_default();
        let error = self.error.as_deref().unwrap_or_default();
        let kind = match self.kind {
            Kind::AddCopy => "add a copy, heal, remove the old".to_string(),
            Kind::Replace => "replace-brick, heal".to_string(),
            Kind::Finish => "finish: heal, remove the old".to_string(),
            Kind::NotMoved => format!("not moved: {why}"),
            Kind::CannotPlace => format!("cannot place: {why}"),
            Kind::Leftover => "leftover of an earlier move".to_string(),
            Kind::Healing => "earlier move, healing".to_string(),
        };
        let seconds = self.heal_seconds.unwrap_or_default();
        let state = match self.state {
            State::Planned => "planned".to_string(),
            State::Held => format!("held: {error}"),
            State::Moved if self.old_brick_removed == Some(false) => {
                format!("moved, healed in {seconds} s; the old brick stays on the down node")
            }
            State::Moved => format!("moved, healed in {seconds} s"),
            State::Failed => format!("failed: {error}"),
            State::Stays => "stays".to_string(),
            State::Removed => "removed".to_string(),
            State::Kept => "kept until the volume is whole".to_string(),
            State::NotRemoved => format!("not removed: {error}"),
            State::Healed => format!("healed in {seconds} s"),
        };
        [
            self.volume.clone(),
            or_dash(&self.claim),
            or_dash(&self.from),
            or_dash(&self.to),
            kind,
            state,
        ]
    }
}

/// The counts the exit code is decided by.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Summary<'a> {
    pub node: &'a str,
    pub node_up: bool,
    pub cluster: &'a str,
    /// Volumes with a brick to move (or an earlier move to finish).
    pub to_move: usize,
    pub cannot_place: usize,
    pub not_moved: usize,
    pub moved: usize,
    pub failed: usize,
    /// What fails the command: the volumes that cannot be placed; with `--apply`, every volume
    /// left on the node and every move that failed.
    pub problems: usize,
}

#[derive(Serialize)]
pub(super) struct Document<'a> {
    pub volumes: &'a [Row],
    pub summary: Summary<'a>,
}

const HEADER: [&str; 6] = ["VOLUME", "CLAIM", "FROM", "TO", "KIND", "STATE"];
/// A long reason widens its own line, not the whole column.
const KIND_WIDTH: usize = 40;

/// Column widths fitted to the plan; the lines printed later keep them.
pub(super) struct Table {
    widths: [usize; 5],
}

impl Table {
    pub fn new(rows: &[Row]) -> Table {
        let mut widths = [0; 5];
        let header = HEADER.map(String::from);
        for cells in std::iter::once(header).chain(rows.iter().map(Row::cells)) {
            for (width, cell) in widths.iter_mut().zip(&cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        widths[4] = widths[4].min(KIND_WIDTH);
        Table { widths }
    }

    pub fn header(&self) -> String {
        self.join(HEADER.map(String::from))
    }

    pub fn line(&self, row: &Row) -> String {
        self.join(row.cells())
    }

    fn join(&self, cells: [String; 6]) -> String {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(self.widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        line.push_str(&cells[5]);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved() -> Row {
        Row {
            from: Some("n1:/b/vol_x/brick".into()),
            to: Some("n4:/b/vol_x/brick".into()),
            state: State::Moved,
            heal_seconds: Some(41),
            old_brick_removed: Some(true),
            ..Row::new("vol_x", Some("ns/data".into()), Kind::AddCopy)
        }
    }

    #[test]
    fn lines_keep_the_columns_of_the_plan() {
        let planned = Row {
            state: State::Planned,
            heal_seconds: None,
            old_brick_removed: None,
            ..moved()
        };
        let table = Table::new(std::slice::from_ref(&planned));
        let header = table.header();
        let line = table.line(&moved());
        assert_eq!(header.find("CLAIM"), line.find("ns/data"));
        assert_eq!(header.find("STATE"), line.find("moved, healed in 41 s"));
        assert!(table.line(&planned).ends_with("  planned"));
    }

    #[test]
    fn a_long_reason_widens_its_own_line_only() {
        let long = Row {
            why: Some("made by another Kubernetes cluster (".to_string() + &"x".repeat(40) + ")"),
            ..Row::new("vol_y", None, Kind::NotMoved)
        };
        let table = Table::new(&[moved(), long.clone()]);
        assert_eq!(
            table.header().find("STATE"),
            table.line(&moved()).find("moved")
        );
        assert!(table.line(&long).ends_with(")  stays"));
        assert_eq!(long.trouble(), format!("not moved: {}", long.why.unwrap()));
    }

    #[test]
    fn rows_are_camel_case_with_kebab_case_values() {
        let row = serde_json::to_value(moved()).unwrap();
        assert_eq!(row["kind"], "add-copy");
        assert_eq!(row["state"], "moved");
        assert_eq!(row["healSeconds"], 41);
        assert_eq!(row["oldBrickRemoved"], true);
        assert_eq!(row["why"], serde_json::Value::Null);
    }

    #[test]
    fn what_does_not_move_stays_and_what_failed_says_why() {
        assert_eq!(Row::new("v", None, Kind::CannotPlace).state, State::Stays);
        assert!(Row::new("v", None, Kind::Replace).moves());
        let failed = Row {
            state: State::Failed,
            error: Some("not healed within 5 s".into()),
            ..Row::new("v", None, Kind::Replace)
        };
        assert_eq!(failed.trouble(), "failed: not healed within 5 s");
    }
}
