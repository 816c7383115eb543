//! Plain text tables, aligned like kubectl's (columns three spaces apart, `-` for nothing).

/// A table: a header and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// A cell's text, `-` when empty; one line, at most `max` characters.
pub fn cell(text: impl AsRef<str>, max: usize) -> String {
    let one_line: String = text.as_ref().split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "-".into();
    }
    match one_line.char_indices().nth(max) {
        Some((end, _)) if max > 1 => format!("{}…", &one_line[..end]),
        _ => one_line,
    }
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let text = row.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == columns {
                    line.push_str(text);
                } else {
                    line.push_str(&format!("{text:<w$}   "));
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
    fn columns_line_up_and_empty_cells_show_a_dash() {
        let mut t = Table::new(&["NAME", "MODE"]);
        t.row(vec!["dev-bot".into(), cell("", 10)]);
        t.row(vec!["b".into(), cell("Halted", 10)]);
        assert_eq!(t.render(), "NAME      MODE\ndev-bot   -\nb         Halted\n");
        assert_eq!(cell("a long\nreason here", 6), "a long…");
    }
}
