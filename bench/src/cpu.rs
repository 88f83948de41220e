//! CPU time per call of each process on a path, from /proc/{pid}/stat
//! (user + system time of all its threads), so a table can say which
//! process the time goes to.

/// Linux reports utime/stime in USER_HZ, 100 on every architecture we run.
const TICKS_PER_SEC: f64 = 100.0;

/// The processes whose CPU time a cell accounts for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    procs: Vec<(&'static str, u32)>,
}

/// CPU ticks of each probed process at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot(Vec<Option<u64>>);

impl Probe {
    /// Adds a process by name and pid.
    pub(crate) fn with(mut self, name: &'static str, pid: Option<u32>) -> Probe {
        if let Some(pid) = pid {
            self.procs.push((name, pid));
        }
        self
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.procs.iter().map(|(_, pid)| ticks(*pid)).collect())
    }

    /// Microseconds of CPU per call for each process between two snapshots.
    pub(crate) fn per_call(
        &self,
        before: &Snapshot,
        after: &Snapshot,
        calls: u64,
    ) -> Vec<(&'static str, f64)> {
        if calls == 0 {
            return Vec::new();
        }
        self.procs
            .iter()
            .zip(before.0.iter().zip(&after.0))
            .filter_map(|((name, _), (b, a))| {
                let ticks = a.as_ref()?.checked_sub(*b.as_ref()?)?;
                Some((*name, ticks as f64 / TICKS_PER_SEC * 1e6 / calls as f64))
            })
            .collect()
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
