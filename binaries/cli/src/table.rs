//! Plain-text tables for the CLI's human output: no borders, two spaces between columns, every
//! column as wide as its widest cell measured in terminal columns (display width, so names with
//! non-ASCII characters line up), and no trailing whitespace.

use comfy_table::{presets::NOTHING, CellAlignment, ColumnConstraint, ContentArrangement, Width};

/// Spaces between two columns.
const GAP: u16 = 2;

/// A table under construction: a header row, then data rows.
pub struct Table {
    inner: comfy_table::Table,
    columns: usize,
    /// Column index → its least width in terminal columns (without the gap).
    min_widths: Vec<(usize, u16)>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header);
        Self {
            inner,
            columns: N,
            min_widths: Vec::new(),
        }
    }

    /// Right-aligns the columns at these indices (numbers).
    pub fn right_align(mut self, columns: &[usize]) -> Self {
        for &i in columns {
            if let Some(column) = self.inner.column_mut(i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        self
    }

    /// Makes column `i` at least `width` terminal columns wide.
    pub fn min_width(mut self, i: usize, width: u16) -> Self {
        self.min_widths.push((i, width));
        self
    }

    /// Adds a data row (one cell per column).
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<comfy_table::Cell>,
    {
        self.inner.add_row(cells);
    }

    /// The rendered table, one line per row, each ending in a newline.
    pub fn render(mut self) -> String {
        for i in 0..self.columns {
            let right = if i + 1 < self.columns { GAP } else { 0 };
            if let Some(column) = self.inner.column_mut(i) {
                column.set_padding((0, right));
            }
        }
        // comfy-table's bounds include the padding.
        for &(i, width) in &self.min_widths {
            let right = if i + 1 < self.columns { GAP } else { 0 };
            if let Some(column) = self.inner.column_mut(i) {
                column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(width + right)));
            }
        }
        let mut out = String::new();
        for line in self.inner.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_display_width_with_non_ascii_names() {
        let mut table = Table::new(["NODE", "MACHINE", "PID"]).right_align(&[2]);
        table.row(["kamera-süd", "robot", "12"]);
        table.row(["カメラ", "gpu", "3456"]);
        table.row(["plain", "edge", "7"]);
        // `ü` is 2 bytes and 1 column, each of `カメラ` 3 bytes and 2 columns.
        assert_eq!(
            table.render(),
            "NODE        MACHINE   PID\n\
             kamera-süd  robot      12\n\
             カメラ      gpu      3456\n\
             plain       edge        7\n"
        );
    }
}
