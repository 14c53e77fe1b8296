//! Exact delivery accounting. Every message names its sender and sequence number; every
//! receiving connection keeps a bitset per sender, so a second copy is a duplicate and a
//! missing one is lost, counted, not estimated: lost = expected − unique, duplicates =
//! received − unique.

use std::collections::HashMap;

#[derive(Default)]
pub struct Tally {
    seen: HashMap<u32, Vec<u64>>,
    pub received: u64,
    pub unique: u64,
}

impl Tally {
    /// Records one delivery of `(sender, seq)`; false when it is a duplicate.
    pub fn record(&mut self, sender: u32, seq: u64) -> bool {
        self.received += 1;
        let bits = self.seen.entry(sender).or_default();
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let fresh = bits[word] & (1 << bit) == 0;
        bits[word] |= 1 << bit;
        if fresh {
            self.unique += 1;
        }
        fresh
    }
}

/// Parses a measured message's content, `"<sender> <seq> <sent µs>"`.
pub fn parse_content(s: &str) -> Option<(u32, u64, u64)> {
    let mut it = s.split(' ');
    let sender = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let at = it.next()?.parse().ok()?;
    Some((sender, seq, at))
}

/// The `content` string of a server frame, found without parsing the whole JSON (the load
/// generator shares two cores with the servers, so its own cost matters).
pub fn content_of(frame: &str) -> Option<&str> {
    let start = frame.find("\"content\":\"")? + 11;
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_unique_exactly() {
        let mut t = Tally::default();
        assert!(t.record(1, 0));
        assert!(t.record(1, 200));
        assert!(!t.record(1, 200));
        assert!(t.record(2, 200));
        assert_eq!((t.received, t.unique), (4, 3), "one duplicate");
    }

    #[test]
    fn reads_the_measured_content() {
        let f = r#"{"method":"say","id":"3","from_uid":"c1","content":"12 7 1700000000000000","room":"r"}"#;
        assert_eq!(content_of(f).and_then(parse_content), Some((12, 7, 1_700_000_000_000_000)));
        assert_eq!(content_of(r#"{"method":"say_ack"}"#), None);
        assert_eq!(parse_content("x 1 2"), None);
    }
}
