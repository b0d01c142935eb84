//! How one deployment is chosen among the candidates a request may use.
//! Pure: the router hands in what it knows of each candidate and a random
//! source; no I/O, no clock.

use rand::Rng;
use serde::Deserialize;

/// LiteLLM's `routing_strategy` names, plus ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Strategy {
    /// Weighted random: `weight`, else `rpm`, else `tpm`, else equal.
    #[default]
    #[serde(rename = "simple-shuffle")]
    SimpleShuffle,
    /// Fewest requests in flight.
    #[serde(rename = "least-busy")]
    LeastBusy,
    /// Lowest moving average of latency (time to first token for streams).
    /// Deployments not measured yet go first, so each gets measured.
    #[serde(rename = "latency-based-routing", alias = "latency-based")]
    LatencyBased,
    /// Most headroom under the deployment's own rpm/tpm this minute (the
    /// fleet's count where limits are shared); without limits, fewest
    /// tokens this minute.
    #[serde(
        rename = "usage-based-routing",
        alias = "usage-based-routing-v2",
        alias = "usage-based"
    )]
    UsageBased,
    /// Cheapest per token (input + output price).
    #[serde(rename = "cost-based-routing", alias = "cost-based")]
    CostBased,
    /// Two candidates drawn by weight; the one with the lower expected
    /// wait (latency × (in flight + 1)) wins. Adapts to a slow deployment
    /// within a few requests without herding onto one "best" deployment
    /// the way pure latency routing does.
    #[serde(rename = "power-of-two-choices", alias = "p2c")]
    PowerOfTwo,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::SimpleShuffle => "simple-shuffle",
            Strategy::LeastBusy => "least-busy",
            Strategy::LatencyBased => "latency-based-routing",
            Strategy::UsageBased => "usage-based-routing",
            Strategy::CostBased => "cost-based-routing",
            Strategy::PowerOfTwo => "power-of-two-choices",
        }
    }
}

/// What the router knows of one candidate deployment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidate {
    /// The deployment's index in the topology (what `choose` returns).
    pub idx: usize,
    /// Its share for weighted choices; positive.
    pub weight: f64,
    pub in_flight: u32,
    /// Moving average in ms of what the request will wait for (the whole
    /// answer, or the first token of a stream); 0 when not measured yet.
    pub latency_ms: f64,
    /// Fraction (0..) of its rpm/tpm used this minute; for a deployment
    /// without limits, 0.
    pub usage: f64,
    /// Tokens it served this minute (the tie-break of usage routing).
    pub tokens: u64,
    /// USD per token, input + output.
    pub cost: f64,
}

/// The deployment `strategy` picks; `candidates` is never empty.
pub fn choose(strategy: Strategy, candidates: &[Candidate], rng: &mut impl Rng) -> usize {
    debug_assert!(!candidates.is_empty());
    if candidates.len() == 1 {
        return candidates[0].idx;
    }
    match strategy {
        Strategy::SimpleShuffle => weighted(candidates, rng).idx,
        Strategy::LeastBusy => lowest(candidates, rng, |c| f64::from(c.in_flight)),
        Strategy::LatencyBased => lowest(candidates, rng, |c| c.latency_ms),
        Strategy::UsageBased => lowest(candidates, rng, |c| {
            // Headroom first; absolute tokens only break ties (a tiny
            // weight keeps the comparison one number).
            c.usage + c.tokens as f64 * 1e-12
        }),
        Strategy::CostBased => lowest(candidates, rng, |c| c.cost),
        Strategy::PowerOfTwo => {
            let a = weighted(candidates, rng);
            // The second draw excludes the first (by position: indexes are
            // unique), so two distinct deployments are compared.
            let rest: Vec<Candidate> = candidates
                .iter()
                .filter(|c| c.idx != a.idx)
                .copied()
                .collect();
            let b = weighted(&rest, rng);
            if clearly_faster(expected_wait(b), expected_wait(a)) {
                b.idx
            } else {
                a.idx
            }
        }
    }
}

/// An unmeasured deployment counts as fast (0), so it is tried and
/// measured; in-flight requests multiply what a new one waits behind.
fn expected_wait(c: &Candidate) -> f64 {
    c.latency_ms * f64::from(c.in_flight + 1)
}

/// Whether a wait of `b` ms beats one of `a` by more than measurement
/// noise (a tenth, and a millisecond). Otherwise the first draw, itself
/// random, stands: equal deployments whose averages differ by a hair would
/// else see the marginally faster one win every comparison and take most
/// of the traffic.
fn clearly_faster(b: f64, a: f64) -> bool {
    b < a * 0.9 && a - b > 1.0
}

fn weighted<'a>(candidates: &'a [Candidate], rng: &mut impl Rng) -> &'a Candidate {
    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    let mut x = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
    for c in candidates {
        x -= c.weight;
        if x < 0.0 {
            return c;
        }
    }
    &candidates[candidates.len() - 1]
}

/// The candidate with the lowest score; ties broken at random so equal
/// deployments share the load.
fn lowest(
    candidates: &[Candidate],
    rng: &mut impl Rng,
    score: impl Fn(&Candidate) -> f64,
) -> usize {
    let best = candidates.iter().map(&score).fold(f64::INFINITY, f64::min);
    let tied = candidates.iter().filter(|c| score(c) <= best).count();
    let mut pick = rng.random_range(0..tied.max(1));
    for c in candidates {
        if score(c) <= best {
            if pick == 0 {
                return c.idx;
            }
            pick -= 1;
        }
    }
    candidates[0].idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn c(idx: usize) -> Candidate {
        Candidate {
            idx,
            weight: 1.0,
            ..Default::default()
        }
    }

    fn counts(strategy: Strategy, cands: &[Candidate], n: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut out = vec![0; cands.iter().map(|c| c.idx).max().unwrap() + 1];
        for _ in 0..n {
            out[choose(strategy, cands, &mut rng)] += 1;
        }
        out
    }

    #[test]
    fn shuffle_follows_the_weights() {
        let cands = [
            Candidate {
                weight: 3.0,
                ..c(0)
            },
            c(1),
        ];
        let n = counts(Strategy::SimpleShuffle, &cands, 4000);
        assert!((2800..3200).contains(&n[0]), "{n:?}");
    }

    #[test]
    fn least_busy_takes_the_idlest_and_shares_ties() {
        let cands = [
            Candidate {
                in_flight: 5,
                ..c(0)
            },
            Candidate {
                in_flight: 1,
                ..c(1)
            },
            Candidate {
                in_flight: 1,
                ..c(2)
            },
        ];
        let n = counts(Strategy::LeastBusy, &cands, 1000);
        assert_eq!(n[0], 0);
        assert!(n[1] > 400 && n[2] > 400, "{n:?}");
    }

    #[test]
    fn latency_routing_prefers_the_fastest_but_measures_the_unknown_first() {
        let fast = Candidate {
            latency_ms: 20.0,
            ..c(0)
        };
        let slow = Candidate {
            latency_ms: 900.0,
            ..c(1)
        };
        assert_eq!(counts(Strategy::LatencyBased, &[fast, slow], 100)[0], 100);
        let unmeasured = c(2);
        assert_eq!(
            counts(Strategy::LatencyBased, &[fast, slow, unmeasured], 10)[2],
            10
        );
    }

    #[test]
    fn usage_routing_takes_the_most_headroom_then_the_fewest_tokens() {
        let busy = Candidate { usage: 0.9, ..c(0) };
        let idle = Candidate {
            usage: 0.1,
            tokens: 50,
            ..c(1)
        };
        let idler = Candidate {
            usage: 0.1,
            tokens: 10,
            ..c(2)
        };
        assert_eq!(
            counts(Strategy::UsageBased, &[busy, idle, idler], 50)[2],
            50
        );
    }

    #[test]
    fn cost_routing_takes_the_cheapest() {
        let dear = Candidate { cost: 3e-5, ..c(0) };
        let cheap = Candidate { cost: 1e-6, ..c(1) };
        assert_eq!(counts(Strategy::CostBased, &[dear, cheap], 50)[1], 50);
    }

    #[test]
    fn two_choices_avoid_a_slow_deployment_without_herding() {
        let slow = Candidate {
            latency_ms: 1000.0,
            ..c(0)
        };
        let a = Candidate {
            latency_ms: 50.0,
            ..c(1)
        };
        let b = Candidate {
            latency_ms: 50.0,
            ..c(2)
        };
        let n = counts(Strategy::PowerOfTwo, &[slow, a, b], 3000);
        // The slow one wins only when both draws are it, which the
        // distinct second draw rules out.
        assert_eq!(n[0], 0, "{n:?}");
        assert!(n[1] > 1200 && n[2] > 1200, "{n:?}");
        // Equal deployments whose averages differ by a hair share evenly.
        let a_hair = Candidate {
            latency_ms: 0.30,
            ..c(1)
        };
        let b_hair = Candidate {
            latency_ms: 0.32,
            ..c(2)
        };
        let n = counts(Strategy::PowerOfTwo, &[slow, a_hair, b_hair], 3000);
        assert_eq!(n[0], 0, "{n:?}");
        assert!(n[1] > 1200 && n[2] > 1200, "{n:?}");
        // A busy fast deployment loses to an idle one of equal speed.
        let busy = Candidate { in_flight: 9, ..a };
        let n = counts(Strategy::PowerOfTwo, &[busy, b], 200);
        assert_eq!(n[2], 200, "{n:?}");
    }

    #[test]
    fn a_single_candidate_is_chosen_whatever_the_strategy() {
        for s in [
            Strategy::SimpleShuffle,
            Strategy::LeastBusy,
            Strategy::LatencyBased,
            Strategy::UsageBased,
            Strategy::CostBased,
            Strategy::PowerOfTwo,
        ] {
            assert_eq!(counts(s, &[c(4)], 5)[4], 5);
        }
    }
}
