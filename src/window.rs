//! A per-minute limit as a sliding window, approximated from two fixed
//! one-minute windows (the previous one weighted by how much of it still
//! overlaps the last 60 s). Pure: time is passed in, as unix ms, so the
//! same arithmetic serves the local counters and the shared (Redis) ones,
//! whose windows are the same wall-clock minutes on every replica.

pub const WINDOW_MS: i64 = 60_000;

/// The window a time falls in (its start, unix ms).
pub fn window_of(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(WINDOW_MS)
}

/// Usage of a limit in the last minute: `prev` and `cur` are the totals
/// of the previous and the current fixed window.
pub fn used(prev: u64, cur: u64, now_ms: i64) -> f64 {
    let into = (now_ms - window_of(now_ms)) as f64 / WINDOW_MS as f64;
    prev as f64 * (1.0 - into) + cur as f64
}

/// Seconds until `cost` more would fit under `limit`, given the windows'
/// totals (0 if it fits now). The previous window's weight falls linearly
/// to zero at the end of the current one; past that only `cur` counts,
/// and it starts over at the next window.
pub fn wait_secs(limit: u64, prev: u64, cur: u64, cost: u64, now_ms: i64) -> f64 {
    let start = window_of(now_ms);
    let into = (now_ms - start) as f64 / WINDOW_MS as f64;
    let room = limit as f64 - cur as f64 - cost as f64;
    if prev as f64 * (1.0 - into) <= room {
        return 0.0;
    }
    let to_next = (start + WINDOW_MS - now_ms) as f64 / 1000.0;
    if room < 0.0 || prev == 0 {
        // Only the next window has room (and then only if cost ≤ limit).
        return to_next.max(0.001);
    }
    // prev × (1 − t) ≤ room  ⇔  t ≥ 1 − room / prev
    let t = 1.0 - room / prev as f64;
    ((t - into) * WINDOW_MS as f64 / 1000.0).clamp(0.001, to_next.max(0.001))
}

/// One limit's two windows, rolled forward as time passes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Windows {
    pub start: i64,
    pub prev: u64,
    pub cur: u64,
}

impl Windows {
    /// Moves to the window `now_ms` falls in.
    pub fn roll(&mut self, now_ms: i64) {
        let w = window_of(now_ms);
        if w == self.start {
            return;
        }
        self.prev = if w - self.start == WINDOW_MS {
            self.cur
        } else {
            0
        };
        self.cur = 0;
        self.start = w;
    }

    pub fn used(&mut self, now_ms: i64) -> f64 {
        self.roll(now_ms);
        used(self.prev, self.cur, now_ms)
    }

    /// Would `cost` more stay within `limit`?
    pub fn fits(&mut self, limit: u64, cost: u64, now_ms: i64) -> bool {
        self.used(now_ms) + cost as f64 <= limit as f64
    }

    pub fn add(&mut self, amount: u64, now_ms: i64) {
        self.roll(now_ms);
        self.cur = self.cur.saturating_add(amount);
    }

    /// Corrects an amount counted in window `at` (e.g. estimated tokens
    /// replaced by real ones). Windows already gone are left alone.
    pub fn correct(&mut self, at: i64, counted: u64, actual: u64, now_ms: i64) {
        self.roll(now_ms);
        let slot = if at == self.start {
            &mut self.cur
        } else if at + WINDOW_MS == self.start {
            &mut self.prev
        } else {
            return;
        };
        *slot = slot.saturating_sub(counted).saturating_add(actual);
    }

    pub fn wait_secs(&mut self, limit: u64, cost: u64, now_ms: i64) -> f64 {
        self.roll(now_ms);
        wait_secs(limit, self.prev, self.cur, cost, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS;

    #[test]
    fn a_minute_holds_the_limit_and_the_previous_one_fades_out() {
        let mut w = Windows::default();
        for _ in 0..60 {
            assert!(w.fits(60, 1, T0 + 1_000));
            w.add(1, T0 + 1_000);
        }
        assert!(!w.fits(60, 1, T0 + 59_000));
        // Half a minute into the next window, half of the old 60 still counts.
        assert_eq!(w.used(T0 + 90_000), 30.0);
        assert!(w.fits(60, 30, T0 + 90_000));
        assert!(!w.fits(60, 31, T0 + 90_000));
        // Two windows later nothing is left.
        assert_eq!(w.used(T0 + 125_000), 0.0);
    }

    #[test]
    fn the_wait_is_until_enough_has_faded() {
        // 60 used in the previous window, limit 60, 15 s into this one:
        // one more fits once 1/60 of the old window has faded... at 1 s in.
        assert_eq!(wait_secs(60, 60, 0, 1, T0 + 15_000), 0.0);
        let wait = wait_secs(60, 60, 30, 1, T0 + 15_000);
        // needs 60 × (1 − t) ≤ 29 → t ≥ 0.5167 → 31 s in → 16 s from now.
        assert!((wait - 16.0).abs() < 0.01, "{wait}");
        // The current window alone is full: until it ends.
        assert!((wait_secs(60, 0, 60, 1, T0 + 15_000) - 45.0).abs() < 0.01);
    }

    #[test]
    fn estimates_are_corrected_in_the_window_they_were_counted_in() {
        let mut w = Windows::default();
        w.add(1_000, T0 + 5_000);
        w.correct(T0, 1_000, 200, T0 + 6_000);
        assert_eq!(w.cur, 200);
        w.add(100, T0 + 61_000);
        w.correct(T0, 200, 300, T0 + 62_000);
        assert_eq!((w.prev, w.cur), (300, 100));
        // Two windows on, T0's window is gone: nothing to correct.
        w.correct(T0, 300, 0, T0 + 130_000);
        assert_eq!((w.prev, w.cur), (100, 0));
    }
}
