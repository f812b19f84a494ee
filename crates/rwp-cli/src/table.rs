//! Plain-text tables, laid out by comfy-table: columns padded to their
//! widest cell (in terminal columns, so wide characters line up too), two
//! spaces apart, numbers right-aligned, no trailing spaces.

use comfy_table::{presets, CellAlignment, TableComponent};

/// Where a column's cells sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row.
#[derive(Clone, Debug)]
pub struct Table {
    inner: comfy_table::Table,
    columns: usize,
}

impl Table {
    #[must_use]
    pub fn new(columns: &[(&str, Align)]) -> Self {
        let mut inner = comfy_table::Table::new();
        // No borders; a cell's one space of right padding and the space
        // between columns keep them two spaces apart.
        inner.load_preset(presets::NOTHING).set_style(TableComponent::VerticalLines, ' ');
        inner.set_header(columns.iter().map(|(h, _)| *h));
        for (column, (_, align)) in inner.column_iter_mut().zip(columns) {
            column.set_padding((0, 1)).set_cell_alignment(match align {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            });
        }
        Self { inner, columns: columns.len() }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    /// Cells hold text from the server: terminal controls are escaped.
    pub fn push(&mut self, row: Vec<String>) {
        let mut row: Vec<String> = row.into_iter().map(|cell| crate::format::printable(&cell).into_owned()).collect();
        row.resize(self.columns, String::new());
        self.inner.add_row(row);
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Width of each column: its widest cell, header included, in terminal columns.
    #[must_use]
    pub fn widths(&self) -> Vec<usize> {
        self.inner.column_max_content_widths().into_iter().map(usize::from).collect()
    }

    /// The table as lines, each ending with a newline.
    #[must_use]
    pub fn render(&self) -> String {
        self.inner.lines().map(|line| format!("{}\n", line.trim_end())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_without_trailing_spaces() {
        let mut t = Table::new(&[("ID", Align::Left), ("NAME", Align::Left), ("LOSS", Align::Right)]);
        assert!(t.is_empty());
        t.push(vec!["j-1".into(), "a-long-name".into(), "1.5".into()]);
        t.push(vec!["j-22".into(), "b".into(), "12.25".into()]);
        t.push(vec!["j-3".into()]);
        assert_eq!(t.widths(), vec![4, 11, 5]);
        let text = t.render();
        let expected = "\
ID    NAME          LOSS
j-1   a-long-name    1.5
j-22  b            12.25
j-3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&[("σ", Align::Left), ("X", Align::Left)]);
        t.push(vec!["λ=0.5".into(), "y".into()]);
        assert_eq!(t.widths(), vec![5, 1]);
        assert_eq!(t.render(), "σ      X\nλ=0.5  y\n");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let mut t = Table::new(&[("NAME", Align::Left), ("X", Align::Left)]);
        t.push(vec!["日本".into(), "y".into()]);
        assert_eq!(t.render(), "NAME  X\n日本  y\n");
    }
}
