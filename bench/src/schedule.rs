//! The order a round measures its paths in: each real path right after its
//! floor, so the pair sees the same moment of a machine whose speed moves
//! from one second to the next.
//!
//! The table keeps its own order; only the measuring order changes.

use crate::report::Row;

/// Indices into `rows` in measuring order: first the paths that are
/// nobody's floor and have none ((a)-(c)), then for each floor the
/// in-process real paths measured against it, its separate-process twin,
/// and the process paths measured against that; anything else last.
pub(crate) fn measuring_order(rows: &[&Row]) -> Vec<usize> {
    let has_paths = |key: &str| rows.iter().any(|r| r.floor == Some(key));
    let is_twin = |key: &str| rows.iter().any(|r| r.apart == Some(key));
    let position = |key: &str| rows.iter().position(|r| r.key == key);
    let mut order: Vec<usize> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if row.floor.is_none() && !has_paths(row.key) && !is_twin(row.key) {
            order.push(i);
        }
    }
    for (f, floor) in rows.iter().enumerate() {
        // Twins ((d'), (e')) come with the floor they are the twin of.
        if !has_paths(floor.key) {
            continue;
        }
        order.push(f);
        // In-process real paths have no apart floor.
        for (i, row) in rows.iter().enumerate() {
            if row.floor == Some(floor.key) && row.apart.is_none() {
                order.push(i);
            }
        }
        let twin = rows
            .iter()
            .filter(|r| r.floor == Some(floor.key))
            .find_map(|r| r.apart);
        if let Some(a) = twin.and_then(position) {
            if !order.contains(&a) {
                order.push(a);
            }
        }
        for (i, row) in rows.iter().enumerate() {
            if row.floor == Some(floor.key) && row.apart.is_some() {
                order.push(i);
            }
        }
    }
    for i in 0..rows.len() {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &'static str, floor: Option<&'static str>, apart: Option<&'static str>) -> Row {
        Row {
            key,
            label: String::new(),
            floor,
            apart,
            samples: Vec::new(),
        }
    }

    fn keys(rows: &[Row]) -> Vec<&'static str> {
        let refs: Vec<&Row> = rows.iter().collect();
        measuring_order(&refs)
            .into_iter()
            .map(|i| rows[i].key)
            .collect()
    }

    #[test]
    fn every_real_path_follows_its_floor() {
        let rows = [
            row("(a)", None, None),
            row("(b)", None, None),
            row("(c)", None, None),
            row("(d)", None, None),
            row("(e)", None, None),
            row("(d')", None, None),
            row("(e')", None, None),
            row("(f)", Some("(d)"), Some("(d')")),
            row("(g)", Some("(e)"), Some("(e')")),
            row("(h)", Some("(d)"), Some("(d')")),
            row("(f1)", Some("(d)"), None),
            row("(g1)", Some("(e)"), None),
            row("(h1)", Some("(d)"), None),
        ];
        assert_eq!(
            keys(&rows),
            [
                "(a)", "(b)", "(c)", "(d)", "(f1)", "(h1)", "(d')", "(f)", "(h)", "(e)", "(g1)",
                "(e')", "(g)"
            ]
        );
    }

    #[test]
    fn missing_rows_leave_the_rest_in_place() {
        // --apart-floors false: no (d'), (e'); --together false: no (f1)-(h1).
        let rows = [
            row("(c)", None, None),
            row("(d)", None, None),
            row("(e)", None, None),
            row("(f)", Some("(d)"), Some("(d')")),
            row("(g)", Some("(e)"), Some("(e')")),
        ];
        assert_eq!(keys(&rows), ["(c)", "(d)", "(f)", "(e)", "(g)"]);
        // --no-floors: only real paths, each measured once.
        let rows = [
            row("(f)", Some("(d)"), Some("(d')")),
            row("(f1)", Some("(d)"), None),
        ];
        assert_eq!(keys(&rows), ["(f)", "(f1)"]);
    }
}
