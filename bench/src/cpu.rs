//! CPU time and context switches per call of each process on a path, from
//! /proc (user + system time of all its threads; the switches of all its
//! threads), so a table can say which process the time goes to, and how
//! often its threads slept and were woken, which on a one-call-at-a-time
//! path is most of the latency.

/// Linux reports utime/stime in USER_HZ, 100 on every architecture we run.
const TICKS_PER_SEC: f64 = 100.0;

/// The processes whose CPU time a cell accounts for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    procs: Vec<(&'static str, u32)>,
}

/// CPU ticks and context switches of each probed process at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot(Vec<Option<(u64, u64)>>);

/// Per call, by process: CPU microseconds and context switches.
#[derive(Debug, Clone, Default)]
pub(crate) struct PerCall {
    pub(crate) cpu_us: Vec<(&'static str, f64)>,
    pub(crate) switches: Vec<(&'static str, f64)>,
}

impl Probe {
    /// Adds a process by name and pid.
    pub(crate) fn with(mut self, name: &'static str, pid: Option<u32>) -> Probe {
        if let Some(pid) = pid {
            self.procs.push((name, pid));
        }
        self
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.procs
                .iter()
                .map(|(_, pid)| Some((ticks(*pid)?, switches(*pid)?)))
                .collect(),
        )
    }

    /// CPU microseconds and context switches per call for each process
    /// between two snapshots.
    pub(crate) fn per_call(&self, before: &Snapshot, after: &Snapshot, calls: u64) -> PerCall {
        let mut out = PerCall::default();
        if calls == 0 {
            return out;
        }
        let calls = calls as f64;
        for ((name, _), (b, a)) in self.procs.iter().zip(before.0.iter().zip(&after.0)) {
            let (Some((t0, s0)), Some((t1, s1))) = (b, a) else {
                continue;
            };
            if let (Some(ticks), Some(switches)) = (t1.checked_sub(*t0), s1.checked_sub(*s0)) {
                out.cpu_us
                    .push((name, ticks as f64 / TICKS_PER_SEC * 1e6 / calls));
                out.switches.push((name, switches as f64 / calls));
            }
        }
        out
    }
}

/// utime + stime of a process, in ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Voluntary and involuntary context switches of all threads of a process.
/// A thread that ended since the last reading takes its count with it,
/// which the services' fixed worker pools do not do while measured.
fn switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // the thread ended while we read
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}
