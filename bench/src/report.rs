//! The machine description and the markdown table.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Cell;

/// One path's results, one cell per concurrency.
#[derive(Debug)]
pub(crate) struct Row {
    /// Short label, e.g. `(a)`.
    pub(crate) key: &'static str,
    /// What the path is.
    pub(crate) label: String,
    /// The key of its floor, for real paths.
    pub(crate) floor: Option<&'static str>,
    /// The outcome at each concurrency, or why it was not measured.
    pub(crate) cells: Vec<Result<Cell, String>>,
}

/// nproc, CPU model, kernel and nats-server version.
pub(crate) fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let nats = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .or_else(|| {
            std::process::Command::new("/usr/sbin/nats-server")
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{nproc} CPUs ({cpu}), Linux {kernel}, {nats}")
}

fn us(d: Duration) -> String {
    let us = d.as_micros();
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} us")
    }
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown table: one line per path and concurrency, each real path
/// next to its floor as slowdown factors (1.00x = as fast as the floor).
pub(crate) fn table(rows: &[Row], concurrency: &[usize]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| path | in flight | calls/s | p50 | p99 | floor | calls/s: floor / path | p50: path / floor |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|");
    let mut notes = Vec::new();
    for row in rows {
        let floor = row.floor.and_then(|key| rows.iter().find(|r| r.key == key));
        for (i, n) in concurrency.iter().enumerate() {
            let name = format!("{} {}", row.key, row.label);
            match row.cells.get(i) {
                Some(Ok(cell)) => {
                    let (floor_name, cps_ratio, p50_ratio) = match floor {
                        Some(f) => match f.cells.get(i) {
                            Some(Ok(fc)) if cell.calls_per_sec > 0.0 => (
                                f.key.to_owned(),
                                format!("{:.2}x", fc.calls_per_sec / cell.calls_per_sec),
                                format!(
                                    "{:.2}x",
                                    cell.p50.as_secs_f64() / fc.p50.as_secs_f64().max(1e-9)
                                ),
                            ),
                            _ => (f.key.to_owned(), "n/a".into(), "n/a".into()),
                        },
                        None => (String::new(), String::new(), String::new()),
                    };
                    let errors = if cell.errors > 0 {
                        notes.push(format!(
                            "{name} at {n}: {} failed calls, first: {}",
                            cell.errors,
                            cell.first_error.as_deref().unwrap_or("?")
                        ));
                        format!(" ({} errors)", cell.errors)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "| {name} | {n} | {}{errors} | {} | {} | {floor_name} | {cps_ratio} | {p50_ratio} |",
                        thousands(cell.calls_per_sec),
                        us(cell.p50),
                        us(cell.p99),
                    );
                }
                Some(Err(why)) => {
                    let short = why.lines().next().unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "| {name} | {n} | {short} | | | {} | | |",
                        row.floor.unwrap_or_default()
                    );
                }
                None => {}
            }
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// CPU microseconds per call by process: where the time goes on each path.
/// For the floors, `bench` holds the client and the servers.
pub(crate) fn cpu_table(rows: &[Row], concurrency: &[usize]) -> String {
    const PROCS: [&str; 5] = ["bench", "gateway", "regiond", "quota", "nats-server"];
    let mut out = String::new();
    let _ = writeln!(out, "| path | in flight | {} | total |", PROCS.join(" | "));
    let _ = writeln!(out, "|---|---:|{}---:|", "---:|".repeat(PROCS.len()));
    for row in rows {
        for (i, n) in concurrency.iter().enumerate() {
            let Some(Ok(cell)) = row.cells.get(i) else {
                continue;
            };
            if cell.cpu.is_empty() {
                continue;
            }
            let mut line = format!("| {} {} | {n} |", row.key, row.label);
            for name in PROCS {
                match cell.cpu.iter().find(|(p, _)| *p == name) {
                    Some((_, us)) => {
                        let _ = write!(line, " {us:.1} |");
                    }
                    None => line.push_str(" |"),
                }
            }
            let total: f64 = cell.cpu.iter().map(|(_, us)| us).sum();
            let _ = writeln!(out, "{line} {total:.1} |");
        }
    }
    out
}
