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
    /// The key of the same floor with its servers in separate processes.
    pub(crate) apart: Option<&'static str>,
    /// The outcomes at each concurrency, one per round (or why a round
    /// could not measure it).
    pub(crate) samples: Vec<Vec<Result<Cell, String>>>,
}

impl Row {
    /// The measured cells at concurrency index `i`, in round order.
    fn measured(&self, i: usize) -> Vec<Option<&Cell>> {
        self.samples
            .get(i)
            .map(|s| s.iter().map(|c| c.as_ref().ok()).collect())
            .unwrap_or_default()
    }

    /// The round whose calls/s is the median at index `i`: its cell stands
    /// for the row (calls/s, p99, CPU), with p50 the median of the rounds'.
    fn median_cell(&self, i: usize) -> Option<Cell> {
        let mut cells: Vec<&Cell> = self.measured(i).into_iter().flatten().collect();
        if cells.is_empty() {
            return None;
        }
        let mut p50s: Vec<Duration> = cells.iter().map(|c| c.p50).collect();
        p50s.sort();
        cells.sort_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec));
        let mut cell = cells[cells.len() / 2].clone();
        cell.p50 = p50s[p50s.len() / 2];
        cell.errors = cells.iter().map(|c| c.errors).sum();
        Some(cell)
    }

    /// Why nothing was measured at index `i`.
    fn failure(&self, i: usize) -> String {
        self.samples
            .get(i)
            .and_then(|s| s.iter().find_map(|c| c.as_ref().err().cloned()))
            .unwrap_or_else(|| "not measured".into())
    }
}

/// The median of the per-round ratios `f(path, floor)` over the rounds where
/// both were measured.
fn paired_median(
    path: &[Option<&Cell>],
    floor: &[Option<&Cell>],
    f: impl Fn(&Cell, &Cell) -> f64,
) -> Option<f64> {
    let mut ratios: Vec<f64> = path
        .iter()
        .zip(floor)
        .filter_map(|(p, fl)| Some(f((*p)?, (*fl)?)))
        .filter(|r| r.is_finite())
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    Some(if ratios.len() % 2 == 1 {
        ratios[mid]
    } else {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    })
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

pub(crate) fn us(d: Duration) -> String {
    let us = d.as_micros();
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} us")
    }
}

pub(crate) fn thousands(n: f64) -> String {
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
        "| path | in flight | calls/s | p50 | p99 | floor | calls/s: floor / path | p50: path / floor | \
         floor apart | calls/s: floor / path | p50: path / floor |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|");
    let mut notes = Vec::new();
    for row in rows {
        let floor = row.floor.and_then(|key| rows.iter().find(|r| r.key == key));
        let apart = row.apart.and_then(|key| rows.iter().find(|r| r.key == key));
        for (i, n) in concurrency.iter().enumerate() {
            let name = format!("{} {}", row.key, row.label);
            let Some(cell) = row.median_cell(i) else {
                if row.samples.get(i).is_some() {
                    let why = row.failure(i);
                    let short = why.lines().next().unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "| {name} | {n} | {short} | | | {} | | | | | |",
                        row.floor.unwrap_or_default()
                    );
                }
                continue;
            };
            let ratios = |floor: Option<&Row>| match floor {
                Some(f) => {
                    let (path, floor) = (row.measured(i), f.measured(i));
                    let cps =
                        paired_median(&path, &floor, |p, fl| fl.calls_per_sec / p.calls_per_sec);
                    let p50 = paired_median(&path, &floor, |p, fl| {
                        p.p50.as_secs_f64() / fl.p50.as_secs_f64().max(1e-9)
                    });
                    let show = |r: Option<f64>| r.map_or("n/a".into(), |r| format!("{r:.2}x"));
                    (f.key.to_owned(), show(cps), show(p50))
                }
                None => (String::new(), String::new(), String::new()),
            };
            let (floor_name, cps_ratio, p50_ratio) = ratios(floor);
            let (apart_name, apart_cps, apart_p50) = ratios(apart);
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
                "| {name} | {n} | {}{errors} | {} | {} | {floor_name} | {cps_ratio} | {p50_ratio} \
                 | {apart_name} | {apart_cps} | {apart_p50} |",
                thousands(cell.calls_per_sec),
                us(cell.p50),
                us(cell.p99),
            );
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
    per_process_table(rows, concurrency, |c| &c.cpu.cpu_us)
}

/// Context switches per call by process: how often threads slept and were
/// woken, the cost a one-call-at-a-time path pays in latency.
pub(crate) fn switch_table(rows: &[Row], concurrency: &[usize]) -> String {
    per_process_table(rows, concurrency, |c| &c.cpu.switches)
}

fn per_process_table(
    rows: &[Row],
    concurrency: &[usize],
    of: impl Fn(&Cell) -> &Vec<(&'static str, f64)>,
) -> String {
    const PROCS: [&str; 7] = [
        "bench",
        "forwarder",
        "upstream",
        "gateway",
        "regiond",
        "quota",
        "nats-server",
    ];
    let mut out = String::new();
    let _ = writeln!(out, "| path | in flight | {} | total |", PROCS.join(" | "));
    let _ = writeln!(out, "|---|---:|{}---:|", "---:|".repeat(PROCS.len()));
    for row in rows {
        for (i, n) in concurrency.iter().enumerate() {
            let Some(cell) = row.median_cell(i) else {
                continue;
            };
            let values = of(&cell);
            if values.is_empty() {
                continue;
            }
            let mut line = format!("| {} {} | {n} |", row.key, row.label);
            for name in PROCS {
                // Several processes may share a name (the apart floors).
                let mut of_name = values.iter().filter(|(p, _)| *p == name).peekable();
                if of_name.peek().is_some() {
                    let v: f64 = of_name.map(|(_, v)| v).sum();
                    let _ = write!(line, " {v:.1} |");
                } else {
                    line.push_str(" |");
                }
            }
            let total: f64 = values.iter().map(|(_, v)| v).sum();
            let _ = writeln!(out, "{line} {total:.1} |");
        }
    }
    out
}
