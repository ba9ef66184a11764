//! The network between the nodes, the NATS server (KV, watches, payment subjects) and the
//! ledgers: each message is delayed, and in bad weather lost or duplicated; a node cut off
//! from NATS sends and receives nothing through it (its ledger connection stays up: the
//! ledger is another server, and a cut-off owner that still posts is what fencing is for).

use crate::rng::Rng;
use crate::time::Millis;

/// How the network behaves for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Weather {
    /// Messages lost, per thousand.
    pub loss: u64,
    /// Messages delivered twice, per thousand.
    pub duplicate: u64,
    /// The longest delay of a message (the shortest is 1 ms).
    pub max_delay: Millis,
}

impl Weather {
    /// A healthy network: nothing lost, a few milliseconds.
    pub const CALM: Weather = Weather { loss: 0, duplicate: 0, max_delay: 5 };
}

#[derive(Clone, Debug)]
pub struct Network {
    pub weather: Weather,
    /// Per node, how many cuts from NATS are in effect.
    cuts: Vec<u32>,
}

impl Network {
    pub fn new(nodes: usize) -> Network {
        Network { weather: Weather::CALM, cuts: vec![0; nodes] }
    }

    /// Whether node `node` reaches NATS.
    pub fn connected(&self, node: usize) -> bool {
        self.cuts.get(node).is_none_or(|cuts| *cuts == 0)
    }

    pub fn cut(&mut self, node: usize) {
        if let Some(cuts) = self.cuts.get_mut(node) {
            *cuts += 1;
        }
    }

    /// Ends one cut; whether the node is connected again.
    pub fn heal(&mut self, node: usize) -> bool {
        if let Some(cuts) = self.cuts.get_mut(node) {
            *cuts = cuts.saturating_sub(1);
        }
        self.connected(node)
    }

    /// The delays after which a message through NATS arrives: none (lost), one, or two
    /// (duplicated).
    pub fn nats(&self, rng: &mut Rng) -> Vec<Millis> {
        let weather = self.weather;
        if rng.chance(weather.loss) {
            return Vec::new();
        }
        let mut delays = vec![rng.between(1, weather.max_delay)];
        if rng.chance(weather.duplicate) {
            delays.push(rng.between(1, weather.max_delay));
        }
        delays
    }

    /// A message's delay through a watch: ordered and never lost while connected (an ordered
    /// consumer starts again at the gap), only delayed.
    pub fn watch(&self, rng: &mut Rng) -> Millis {
        rng.between(1, self.weather.max_delay)
    }

    /// The delays of a message between a node and its ledger: a quarter of NATS's losses,
    /// never duplicated (a database connection), a few milliseconds more than NATS's.
    pub fn ledger(&self, rng: &mut Rng) -> Option<Millis> {
        let weather = self.weather;
        (!rng.chance(weather.loss / 4)).then(|| rng.between(1, weather.max_delay + 10))
    }
}
