//! Plain-text tables: columns padded to their widest cell, two spaces apart,
//! numbers right-aligned, no trailing spaces.

/// Where a column's cells sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row.
#[derive(Clone, Debug)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    #[must_use]
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self { columns: columns.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    /// Cells hold text from the server: terminal controls are escaped.
    pub fn push(&mut self, row: Vec<String>) {
        let mut row: Vec<String> = row.into_iter().map(|cell| crate::format::printable(&cell).into_owned()).collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Width of each column: its widest cell, header included, in characters.
    #[must_use]
    pub fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        widths
    }

    /// The table as lines, each ending with a newline.
    #[must_use]
    pub fn render(&self) -> String {
        let widths = self.widths();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((cell, width), (_, align))) in row.iter().zip(&widths).zip(&self.columns).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width - cell.chars().count();
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
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
}
