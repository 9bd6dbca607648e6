//! The work split of a cluster (SPEC section 19), as pure decisions: which
//! bucket a service falls in, a node's fair share of the buckets, and what a
//! node does in one lease round given the lease table and the live nodes.
//!
//! Nothing here reads a clock or talks to PostgreSQL: the daemon reads the
//! table and PostgreSQL's `now()` in one transaction, asks [`plan_round`]
//! what to do, and applies the answer with conditional writes (the server's
//! `cluster` module). Times are [`UnixMs`] of the database's clock, so the
//! nodes need no synchronised clocks.
//!
//! The rules, in one place:
//! - a lease is *held* by its owner while `expires_at > now`;
//! - a node renews the leases it holds, up to its [`fair_share`];
//! - it gives up (releases) the ones beyond its share, so that a joining
//!   node finds free buckets (rebalancing);
//! - it claims free or expired buckets up to its share; every claim bumps
//!   the bucket's [`Epoch`], even when the expired lease was its own (the
//!   node cannot know what happened to the bucket while it was not holding
//!   it), and that is what fences the writes of a node that lost a lease.

use crate::UnixMs;
use std::collections::BTreeSet;
use std::fmt;

/// How many buckets the services are hashed into: enough that 3 to 30
/// nodes get shares within 3 % of each other (1,024 / 30 = 34.1), few
/// enough that a node renews all its leases in one statement.
pub const BUCKETS: u16 = 1024;

/// One of the [`BUCKETS`] buckets, `0..1024`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket(u16);

impl Bucket {
    /// Bucket `n`, if `n < BUCKETS`.
    pub fn new(n: i64) -> Option<Bucket> {
        u16::try_from(n).ok().filter(|n| *n < BUCKETS).map(Bucket)
    }

    /// The bucket number (the `buckets.bucket` column).
    pub fn get(self) -> u16 {
        self.0
    }

    /// Every bucket, in order.
    pub fn all() -> impl Iterator<Item = Bucket> {
        (0..BUCKETS).map(Bucket)
    }

    /// The bucket of the service named `name`: FNV-1a (64 bit) of the
    /// name's UTF-8 bytes, folded to 32 bits, modulo [`BUCKETS`].
    ///
    /// Why the name and why FNV-1a: the name is the service's identity in
    /// the API and the same in every store and on every node, while row
    /// ids are assigned by each database. FNV-1a is a published function
    /// of a few lines (offset basis and prime are fixed constants), so the
    /// bucket of a name never changes with a Rust release (std's
    /// `DefaultHasher` makes no such promise) or a dependency, and can be
    /// recomputed in SQL or by an operator's script. It is not keyed: a
    /// user choosing names to pile services into one bucket only unbalances
    /// their own cluster.
    pub fn of(name: &str) -> Bucket {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let folded = (h ^ (h >> 32)) as u32;
        Bucket((folded % u32::from(BUCKETS)) as u16)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A bucket's fencing epoch: bumped by every claim, so that a write
/// carrying an older epoch is recognisably stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

impl Epoch {
    /// The epoch a claim of this bucket gives.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One row of the lease table as read at the start of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The bucket.
    pub bucket: Bucket,
    /// The node that last claimed it (`None`: never claimed, or released).
    pub owner: Option<String>,
    /// Its epoch.
    pub epoch: Epoch,
    /// When the lease ends, on the database's clock (`None`: free).
    pub expires_at: Option<UnixMs>,
}

impl Lease {
    /// Whether `node` holds this lease at `now`.
    pub fn held_by(&self, node: &str, now: UnixMs) -> bool {
        self.owner.as_deref() == Some(node) && self.live(now)
    }

    /// Whether some node holds it at `now`.
    pub fn live(&self, now: UnixMs) -> bool {
        self.owner.is_some() && self.expires_at.is_some_and(|t| t > now)
    }
}

/// A node's fair share: `ceil(buckets / live_nodes)` (every bucket if no
/// node is counted). The ceiling makes the shares add up to at least
/// `buckets`, so no bucket is left without a node that may claim it.
pub fn fair_share(buckets: usize, live_nodes: usize) -> usize {
    buckets.div_ceil(live_nodes.max(1))
}

/// What one node does in one round ([`plan_round`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Leases it holds and keeps: renew them (`expires_at = now + expiry`)
    /// on condition that owner and epoch are still these.
    pub renew: Vec<(Bucket, Epoch)>,
    /// Leases it holds beyond its share: give them up (owner cleared), and
    /// stop working on them *before* the release commits.
    pub release: Vec<Bucket>,
    /// Free or expired buckets it may claim, best first; claim at most
    /// [`Round::claim_limit`] of them, skipping any another node has
    /// locked or taken meanwhile. A claim sets epoch = epoch + 1.
    pub claim: Vec<Bucket>,
    /// How many of [`Round::claim`] to take: its share minus what it keeps.
    pub claim_limit: usize,
}

/// A node's order of preference over the buckets: starting at a point
/// derived from its id and going round. Nodes claiming at the same time
/// then mostly reach for different buckets, and a node keeps a stable
/// range when it gives buckets up.
fn preference(node: &str) -> impl Iterator<Item = Bucket> {
    let start = Bucket::of(node).0;
    (0..BUCKETS).map(move |i| Bucket((start + i) % BUCKETS))
}

/// The round of node `me` at `now` (the database's clock), given the whole
/// lease table and the ids of the nodes whose heartbeat is recent (`me` is
/// counted whether listed or not).
///
/// Buckets missing from `leases` are treated as free. The plan keeps the
/// first `share` held buckets in the node's preference order and releases
/// the rest; it lists every free or expired bucket as a claim candidate in
/// preference order, with a limit of `share - kept`.
pub fn plan_round<'a>(
    me: &str,
    now: UnixMs,
    leases: &[Lease],
    live_nodes: impl IntoIterator<Item = &'a str>,
) -> Round {
    let mut live: BTreeSet<&str> = live_nodes.into_iter().collect();
    live.insert(me);
    let share = fair_share(usize::from(BUCKETS), live.len());
    let mut table: Vec<Option<&Lease>> = vec![None; usize::from(BUCKETS)];
    for l in leases {
        table[usize::from(l.bucket.0)] = Some(l);
    }
    let mut round = Round::default();
    for b in preference(me) {
        match table[usize::from(b.0)] {
            Some(l) if l.held_by(me, now) => {
                if round.renew.len() < share {
                    round.renew.push((b, l.epoch));
                } else {
                    round.release.push(b);
                }
            }
            Some(l) if l.live(now) => {}
            _ => round.claim.push(b),
        }
    }
    round.claim_limit = share - round.renew.len();
    if round.claim_limit == 0 {
        round.claim.clear();
    }
    round
}

/// A set of buckets as 1,024 bits: what a node's scheduler consults once
/// per check (one shift and mask, no hashing), and what
/// `GET /api/v1/cluster` shows as ranges.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BucketSet([u64; BUCKETS as usize / 64]);

impl BucketSet {
    /// No bucket.
    pub const EMPTY: BucketSet = BucketSet([0; BUCKETS as usize / 64]);
    /// Every bucket (a single node, or SQLite).
    pub const ALL: BucketSet = BucketSet([u64::MAX; BUCKETS as usize / 64]);

    /// Whether `b` is in the set.
    #[inline]
    pub fn contains(&self, b: Bucket) -> bool {
        self.0[usize::from(b.0 >> 6)] & (1 << (b.0 & 63)) != 0
    }

    /// Adds `b`.
    pub fn insert(&mut self, b: Bucket) {
        self.0[usize::from(b.0 >> 6)] |= 1 << (b.0 & 63);
    }

    /// Removes `b`.
    pub fn remove(&mut self, b: Bucket) {
        self.0[usize::from(b.0 >> 6)] &= !(1 << (b.0 & 63));
    }

    /// How many buckets are in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The buckets in `self` and not in `other`.
    pub fn minus(&self, other: &BucketSet) -> BucketSet {
        let mut out = *self;
        for (w, o) in out.0.iter_mut().zip(other.0) {
            *w &= !o;
        }
        out
    }

    /// The buckets, in order.
    pub fn iter(&self) -> impl Iterator<Item = Bucket> + '_ {
        Bucket::all().filter(|b| self.contains(*b))
    }

    /// The buckets as inclusive ranges `(first, last)`, in order: all of
    /// them is `[(0, 1023)]`.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for b in self.iter() {
            match out.last_mut() {
                Some((_, last)) if *last + 1 == b.0 => *last = b.0,
                _ => out.push((b.0, b.0)),
            }
        }
        out
    }
}

impl FromIterator<Bucket> for BucketSet {
    fn from_iter<I: IntoIterator<Item = Bucket>>(iter: I) -> BucketSet {
        let mut set = BucketSet::EMPTY;
        for b in iter {
            set.insert(b);
        }
        set
    }
}

impl fmt::Debug for BucketSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BucketSet[")?;
        for (i, (a, b)) in self.ranges().into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(ms: i64) -> UnixMs {
        UnixMs::new(ms)
    }

    fn lease(b: u16, owner: Option<&str>, epoch: i64, expires: Option<i64>) -> Lease {
        Lease {
            bucket: Bucket(b),
            owner: owner.map(str::to_string),
            epoch: Epoch(epoch),
            expires_at: expires.map(UnixMs::new),
        }
    }

    fn free_table() -> Vec<Lease> {
        Bucket::all()
            .map(|b| lease(b.0, None, 0, None))
            .collect::<Vec<_>>()
    }

    #[test]
    fn bucket_of_a_name_is_pinned() {
        // These values are part of the cluster's contract: nodes of
        // different versions must agree on them. Never change them.
        let pinned = [
            ("", 961),
            ("a", 192),
            ("web", 1000),
            ("svc-00000", 201),
            ("postgres-primary", 904),
            ("héllo", 1023),
        ];
        for (name, want) in pinned {
            assert_eq!(Bucket::of(name).get(), want, "bucket of {name:?}");
        }
    }

    #[test]
    fn fnv1a_matches_the_published_test_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the reference vectors).
        let h: u64 = 0xaf63_dc4c_8601_ec8c;
        let folded = (h ^ (h >> 32)) as u32;
        assert_eq!(Bucket::of("a").get(), (folded % u32::from(BUCKETS)) as u16);
    }

    #[test]
    fn buckets_of_many_names_are_spread() {
        let mut counts = vec![0u32; usize::from(BUCKETS)];
        for i in 0..102_400 {
            counts[usize::from(Bucket::of(&format!("svc-{i:05}")).get())] += 1;
        }
        // 100 per bucket on average; a uniform hash stays well within 2x.
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min >= 50 && max <= 150, "min {min}, max {max}");
    }

    #[test]
    fn bucket_new_checks_the_range() {
        assert_eq!(Bucket::new(0), Some(Bucket(0)));
        assert_eq!(Bucket::new(1023), Some(Bucket(1023)));
        assert_eq!(Bucket::new(1024), None);
        assert_eq!(Bucket::new(-1), None);
    }

    #[test]
    fn fair_share_is_the_ceiling() {
        let cases = [
            (1024, 0, 1024),
            (1024, 1, 1024),
            (1024, 2, 512),
            (1024, 3, 342),
            (1024, 4, 256),
            (1024, 5, 205),
            (1024, 1024, 1),
            (1024, 2000, 1),
        ];
        for (buckets, nodes, want) in cases {
            assert_eq!(fair_share(buckets, nodes), want, "{buckets}/{nodes}");
        }
    }

    #[test]
    fn a_lone_node_claims_every_free_bucket() {
        let r = plan_round("a", t(1000), &free_table(), []);
        assert!(r.renew.is_empty() && r.release.is_empty());
        assert_eq!(r.claim.len(), 1024);
        assert_eq!(r.claim_limit, 1024);
    }

    #[test]
    fn missing_rows_count_as_free() {
        let r = plan_round("a", t(0), &[], ["b"]);
        assert_eq!(r.claim.len(), 1024);
        assert_eq!(r.claim_limit, 512);
    }

    #[test]
    fn held_leases_are_renewed_with_their_epoch_and_live_ones_left_alone() {
        let mut table = free_table();
        table[3] = lease(3, Some("a"), 7, Some(2000));
        table[4] = lease(4, Some("b"), 2, Some(2000));
        let r = plan_round("a", t(1000), &table, ["b"]);
        assert_eq!(r.renew, vec![(Bucket(3), Epoch(7))]);
        assert!(!r.claim.contains(&Bucket(3)));
        assert!(
            !r.claim.contains(&Bucket(4)),
            "b's live lease is not claimed"
        );
        assert_eq!(r.claim.len(), 1022);
        assert_eq!(r.claim_limit, 511);
    }

    #[test]
    fn expired_leases_are_claimable_even_ones_own() {
        let mut table = free_table();
        table[5] = lease(5, Some("b"), 4, Some(1000));
        table[6] = lease(6, Some("a"), 9, Some(999));
        let r = plan_round("a", t(1000), &table, ["b"]);
        assert!(r.renew.is_empty(), "an expired lease is not renewed");
        assert!(r.claim.contains(&Bucket(5)) && r.claim.contains(&Bucket(6)));
        assert_eq!(Epoch(4).next(), Epoch(5));
    }

    #[test]
    fn leases_beyond_the_share_are_released() {
        let table: Vec<Lease> = Bucket::all()
            .map(|b| lease(b.0, Some("a"), 1, Some(5000)))
            .collect();
        let r = plan_round("a", t(1000), &table, ["a", "b", "c", "d"]);
        assert_eq!(r.renew.len(), 256);
        assert_eq!(r.release.len(), 768);
        assert!(r.claim.is_empty());
        assert_eq!(r.claim_limit, 0);
        let renewed: BTreeSet<Bucket> = r.renew.iter().map(|(b, _)| *b).collect();
        assert!(r.release.iter().all(|b| !renewed.contains(b)));
    }

    #[test]
    fn a_node_at_its_share_claims_nothing() {
        let mut table = free_table();
        for (b, l) in table.iter_mut().enumerate().take(512) {
            *l = lease(b as u16, Some("a"), 1, Some(5000));
        }
        let r = plan_round("a", t(1000), &table, ["b"]);
        assert_eq!(r.renew.len(), 512);
        assert!(r.claim.is_empty());
        assert_eq!(r.claim_limit, 0);
    }

    #[test]
    fn preferences_of_different_nodes_start_apart() {
        let a = preference("node-a").next().unwrap();
        let b = preference("node-b").next().unwrap();
        assert_ne!(a, b);
        assert_eq!(preference("node-a").collect::<BTreeSet<_>>().len(), 1024);
    }

    /// A lease table applied the way the server applies a [`Round`]: one
    /// node's round at a time, claims re-checked against the current row.
    struct Sim {
        table: Vec<Lease>,
        expiry: i64,
    }

    impl Sim {
        fn round(&mut self, me: &str, now: i64, live: &[&str]) {
            let r = plan_round(me, t(now), &self.table, live.iter().copied());
            for (b, e) in &r.renew {
                let l = &mut self.table[usize::from(b.0)];
                assert_eq!(l.epoch, *e);
                l.expires_at = Some(t(now + self.expiry));
            }
            for b in &r.release {
                let l = &mut self.table[usize::from(b.0)];
                l.owner = None;
                l.expires_at = None;
            }
            let mut taken = 0;
            for b in &r.claim {
                if taken == r.claim_limit {
                    break;
                }
                let l = &mut self.table[usize::from(b.0)];
                if !l.live(t(now)) {
                    l.owner = Some(me.to_string());
                    l.epoch = l.epoch.next();
                    l.expires_at = Some(t(now + self.expiry));
                    taken += 1;
                }
            }
        }

        fn counts(&self, now: i64) -> BTreeMap<String, usize> {
            let mut m = BTreeMap::new();
            for l in &self.table {
                if l.live(t(now)) {
                    *m.entry(l.owner.clone().unwrap()).or_default() += 1;
                }
            }
            m
        }
    }

    #[test]
    fn nodes_joining_one_by_one_converge_to_fair_shares() {
        let mut sim = Sim {
            table: free_table(),
            expiry: 10_000,
        };
        let mut now = 0;
        let mut nodes: Vec<&str> = Vec::new();
        for joining in ["a", "b", "c", "d"] {
            nodes.push(joining);
            for _ in 0..3 {
                for n in &nodes {
                    sim.round(n, now, &nodes);
                }
                now += 2000;
            }
            let counts = sim.counts(now);
            let share = fair_share(1024, nodes.len());
            assert_eq!(counts.values().sum::<usize>(), 1024, "{counts:?}");
            assert_eq!(counts.len(), nodes.len(), "{counts:?}");
            assert!(counts.values().all(|c| *c <= share), "{counts:?}");
        }
    }

    #[test]
    fn a_dead_nodes_buckets_are_taken_over_with_new_epochs() {
        let mut sim = Sim {
            table: free_table(),
            expiry: 10_000,
        };
        let all = ["a", "b", "c"];
        for now in [0, 2000, 4000] {
            for n in all {
                sim.round(n, now, &all);
            }
        }
        let before: BTreeMap<Bucket, Epoch> = sim
            .table
            .iter()
            .filter(|l| l.owner.as_deref() == Some("c"))
            .map(|l| (l.bucket, l.epoch))
            .collect();
        assert!(!before.is_empty());
        // c stops; a and b keep going. Until c's leases expire, nothing moves.
        let mut now = 6000;
        while now <= 30_000 {
            let live: &[&str] = if now < 14_000 { &all } else { &all[..2] };
            for n in ["a", "b"] {
                sim.round(n, now, live);
            }
            if now < 14_000 {
                assert_eq!(sim.counts(now)["c"], before.len());
            }
            now += 2000;
        }
        let counts = sim.counts(now - 2000);
        assert_eq!(counts.get("c"), None);
        assert_eq!(counts.values().sum::<usize>(), 1024);
        for (b, e) in before {
            let l = &sim.table[usize::from(b.0)];
            assert!(l.epoch > e, "bucket {b} epoch {} after {e}", l.epoch);
        }
    }

    #[test]
    fn bucket_sets_hold_buckets_as_bits_and_show_ranges() {
        let mut s = BucketSet::EMPTY;
        assert!(s.is_empty());
        for b in [0, 1, 2, 63, 64, 65, 700, 1023] {
            s.insert(Bucket(b));
        }
        assert!(s.contains(Bucket(64)) && !s.contains(Bucket(3)));
        assert_eq!(s.len(), 8);
        assert_eq!(s.ranges(), [(0, 2), (63, 65), (700, 700), (1023, 1023)]);
        assert_eq!(format!("{s:?}"), "BucketSet[0-2, 63-65, 700, 1023]");
        s.remove(Bucket(64));
        assert_eq!(
            s.ranges(),
            [(0, 2), (63, 63), (65, 65), (700, 700), (1023, 1023)]
        );
        assert_eq!(BucketSet::ALL.len(), 1024);
        assert_eq!(BucketSet::ALL.ranges(), [(0, 1023)]);
        let gained = BucketSet::ALL.minus(&s);
        assert_eq!(gained.len(), 1024 - 7);
        assert!(!gained.contains(Bucket(700)) && gained.contains(Bucket(64)));
        assert_eq!(Bucket::all().collect::<BucketSet>(), BucketSet::ALL);
    }
}
