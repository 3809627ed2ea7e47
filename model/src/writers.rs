//! Which process of a cluster writes which rows, when every process has its own sink writer.
//!
//! A row belongs to the process `key % processes`, where the key is the id its store
//! partitions by: the SKU of stock, rating and recommendation rows, the order of an order
//! row, the member of member rows and points entries, the seller of settlement entries,
//! payouts, tax invoices, sales facts and minute rollups. Alerts and dead letters go to the
//! last process (their sinks are logs with one writer). Each writer keeps its own progress
//! record in every store (`{name}` alone for one process, `{name}:{process}` in a cluster);
//! a store answers as of the smallest of them.

/// One writer's place among the writers of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Writers {
    /// This writer's process, `0..processes`.
    pub process: usize,
    /// How many processes write (1: one writer writes everything).
    pub processes: usize,
}

impl Default for Writers {
    fn default() -> Self {
        Writers::ONE
    }
}

impl Writers {
    /// One writer for everything (a single process, or stores kept in process).
    pub const ONE: Writers = Writers {
        process: 0,
        processes: 1,
    };

    /// The writer of process `process` of `processes`.
    ///
    /// # Panics
    /// If `process` is not below `processes`.
    pub fn new(process: usize, processes: usize) -> Self {
        assert!(process < processes, "process {process} of {processes}");
        Writers { process, processes }
    }

    /// The process that writes the rows of `key`.
    pub fn owner(&self, key: u64) -> usize {
        (key % self.processes as u64) as usize
    }

    /// Whether this writer writes the rows of `key`.
    pub fn owns(&self, key: u64) -> bool {
        self.owner(key) == self.process
    }

    /// The process that writes alerts and dead letters.
    pub fn logs(&self) -> usize {
        self.processes - 1
    }

    /// The name of process `process`'s progress record called `base`.
    pub fn record_of(&self, base: &str, process: usize) -> String {
        match self.processes {
            1 => base.to_string(),
            _ => format!("{base}:{process}"),
        }
    }

    /// This writer's progress record called `base`.
    pub fn record(&self, base: &str) -> String {
        self.record_of(base, self.process)
    }

    /// What a store's progress records say together: the `as_of` every row is at least as
    /// new as — the smallest of the writers' (0 for a writer that has written nothing yet),
    /// `None` when none has written.
    pub fn smallest(
        records: impl IntoIterator<Item = Option<crate::Millis>>,
    ) -> Option<crate::Millis> {
        let mut any = false;
        let mut smallest = crate::Millis::MAX;
        for r in records {
            any |= r.is_some();
            smallest = smallest.min(r.unwrap_or(0));
        }
        any.then_some(smallest)
    }

    /// Every writer's progress record called `base`, in process order.
    pub fn records(&self, base: &str) -> Vec<String> {
        (0..self.processes)
            .map(|p| self.record_of(base, p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_keeps_the_names_of_a_single_process() {
        assert_eq!(Writers::ONE.record("ledger"), "ledger");
        assert_eq!(Writers::ONE.records("ledger"), vec!["ledger"]);
        assert!(Writers::ONE.owns(12345));
    }

    #[test]
    fn each_key_has_exactly_one_writer_among_several() {
        let all: Vec<Writers> = (0..3).map(|p| Writers::new(p, 3)).collect();
        for key in 0..100u64 {
            assert_eq!(all.iter().filter(|w| w.owns(key)).count(), 1, "key {key}");
        }
        assert_eq!(all[1].record("ledger"), "ledger:1");
        assert_eq!(all[0].records("x"), vec!["x:0", "x:1", "x:2"]);
        assert_eq!(all[0].logs(), 2);
    }

    #[test]
    fn a_store_is_as_new_as_its_slowest_writer() {
        assert_eq!(Writers::smallest([None, None]), None);
        assert_eq!(Writers::smallest([Some(7)]), Some(7));
        assert_eq!(Writers::smallest([Some(7), Some(5)]), Some(5));
        assert_eq!(Writers::smallest([Some(7), None]), Some(0));
    }
}
