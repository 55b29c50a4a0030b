//! Ordered offset tracking for at-least-once delivery.
//!
//! Records of one partition may finish out of order (their images take different times to
//! fetch). The committable position of a partition is the lowest offset still in flight, or one
//! past the highest offset seen when nothing is in flight. Storing only that position means a
//! crash redoes every unfinished record and never skips one.

use std::collections::{BTreeMap, BTreeSet};

/// One partition of one topic.
pub type TopicPartition = (String, i32);

#[derive(Debug)]
struct PartitionState {
    in_flight: BTreeSet<i64>,
    /// The first offset begun: the position before anything was done.
    first: i64,
    /// One past the highest offset begun.
    next: i64,
    /// The highest position reached so far.
    reported: i64,
}

impl PartitionState {
    /// Where consumption would resume: the lowest offset in flight, or past everything begun.
    fn position(&self) -> i64 {
        self.in_flight.first().copied().unwrap_or(self.next)
    }
}

/// In-flight records per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: BTreeMap<TopicPartition, PartitionState>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` has been received and is being processed.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let st = self
            .parts
            .entry((topic.to_owned(), partition))
            .or_insert(PartitionState {
                in_flight: BTreeSet::new(),
                first: offset,
                next: offset,
                reported: offset,
            });
        st.in_flight.insert(offset);
        st.next = st.next.max(offset + 1);
    }

    /// Records that `offset` is done (all outputs acknowledged). Returns the new committable
    /// position (the next offset to consume) if it advanced.
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let st = self.parts.get_mut(&(topic.to_owned(), partition))?;
        if !st.in_flight.remove(&offset) {
            return None;
        }
        let pos = st.position();
        (pos > st.reported).then(|| {
            st.reported = pos;
            pos
        })
    }

    /// Committable positions of every partition where something is done.
    pub fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.parts
            .iter()
            .filter(|(_, st)| st.reported > st.first)
            .map(|(tp, st)| (tp.clone(), st.reported))
            .collect()
    }

    /// Number of records in flight.
    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|s| s.in_flight.len()).sum()
    }

    /// Forgets a partition (after it was revoked); its in-flight records will be redone by the
    /// next owner.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(topic.to_owned(), partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_prefix() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.begin("t", 0, o);
        }
        assert_eq!(
            t.complete("t", 0, 12),
            None,
            "12 done but 10 and 11 are not"
        );
        assert_eq!(t.complete("t", 0, 11), None);
        assert_eq!(
            t.complete("t", 0, 10),
            Some(13),
            "10, 11, 12 done: resume at 13"
        );
        assert_eq!(t.complete("t", 0, 14), None, "13 still in flight");
        assert_eq!(t.positions(), vec![(("t".into(), 0), 13)]);
        assert_eq!(t.complete("t", 0, 13), Some(15));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete("t", 0, 13), None, "completing twice is ignored");
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        t.begin("t", 0, 0);
        t.begin("t", 1, 0);
        t.begin("t", 1, 1);
        assert_eq!(t.complete("t", 1, 0), Some(1));
        assert_eq!(
            t.positions(),
            vec![(("t".into(), 1), 1)],
            "partition 0 has nothing done yet"
        );
        assert_eq!(t.complete("t", 0, 0), Some(1));
        t.forget("t", 1);
        assert_eq!(t.complete("t", 1, 1), None);
        assert_eq!(t.positions(), vec![(("t".into(), 0), 1)]);
        // Assigned again later, from the committed position 1: a fresh start, nothing of the
        // old state (offset 1 was in flight there) carries over.
        t.begin("t", 1, 1);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.complete("t", 1, 1), Some(2));
    }
}
