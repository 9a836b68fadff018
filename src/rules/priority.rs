//! ITIL impact and urgency, and the matrix that turns them into a priority
//! from 1 (most urgent) to 5.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    High,
    Medium,
    Low,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "high" => Some(Level::High),
            "medium" => Some(Level::Medium),
            "low" => Some(Level::Low),
            _ => None,
        }
    }

    /// Row or column in the matrix: declaration order is high, medium, low.
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rows are impact, columns urgency, both in the order high, medium, low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PriorityMatrix([[u8; 3]; 3]);

impl Default for PriorityMatrix {
    /// The common ITIL 3x3 matrix.
    fn default() -> Self {
        PriorityMatrix([[1, 2, 3], [2, 3, 4], [3, 4, 5]])
    }
}

impl PriorityMatrix {
    pub(super) fn get(&self, impact: Level, urgency: Level) -> u8 {
        self.0[impact.index()][urgency.index()]
    }

    /// Builds the matrix written in a rule file; the error lists the cells
    /// outside 1..=5.
    pub(super) fn from_raw(raw: &RawMatrix) -> Result<PriorityMatrix, String> {
        let rows = [&raw.high, &raw.medium, &raw.low];
        let matrix = PriorityMatrix(rows.map(|r| [r.high, r.medium, r.low]));
        let bad: Vec<String> = [Level::High, Level::Medium, Level::Low]
            .iter()
            .flat_map(|i| [Level::High, Level::Medium, Level::Low].map(|u| (*i, u)))
            .filter(|(i, u)| !(1..=5).contains(&matrix.get(*i, *u)))
            .map(|(i, u)| format!("{i}.{u} = {}", matrix.get(i, u)))
            .collect();
        if bad.is_empty() {
            Ok(matrix)
        } else {
            Err(format!("priorities must be 1..=5, got {}", bad.join(", ")))
        }
    }
}

/// `priority_matrix:` as written: `impact: { urgency: priority }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatrix {
    high: RawRow,
    medium: RawRow,
    low: RawRow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    high: u8,
    medium: u8,
    low: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matrix_is_the_itil_three_by_three() {
        let m = PriorityMatrix::default();
        assert_eq!(m.get(Level::High, Level::High), 1);
        assert_eq!(m.get(Level::High, Level::Low), 3);
        assert_eq!(m.get(Level::Medium, Level::Medium), 3);
        assert_eq!(m.get(Level::Low, Level::High), 3);
        assert_eq!(m.get(Level::Low, Level::Low), 5);
    }

    #[test]
    fn written_matrix_overrides_and_out_of_range_cells_are_named() {
        let raw: RawMatrix = serde_norway::from_str(
            "high: {high: 1, medium: 1, low: 2}\nmedium: {high: 2, medium: 3, low: 4}\nlow: {high: 3, medium: 4, low: 5}\n",
        )
        .unwrap();
        let m = PriorityMatrix::from_raw(&raw).unwrap();
        assert_eq!(m.get(Level::High, Level::Medium), 1);
        let raw: RawMatrix = serde_norway::from_str(
            "high: {high: 0, medium: 1, low: 2}\nmedium: {high: 2, medium: 3, low: 4}\nlow: {high: 3, medium: 4, low: 9}\n",
        )
        .unwrap();
        let err = PriorityMatrix::from_raw(&raw).unwrap_err();
        assert!(
            err.contains("high.high = 0") && err.contains("low.low = 9"),
            "{err}"
        );
    }

    #[test]
    fn levels_parse_and_print_lowercase() {
        assert_eq!(Level::parse("medium"), Some(Level::Medium));
        assert_eq!(Level::parse("High"), None);
        assert_eq!(Level::Low.to_string(), "low");
    }
}
