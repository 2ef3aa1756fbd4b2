//! Client datasets: records grouped into clients (the natural partition, IID, or Dirichlet
//! size-skewed), small clients dropped, each client's records split into local train and test
//! parts, and some clients kept out of training altogether (to measure how the global model
//! does on users it never saw).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use crate::text_data::Record;

/// How records are grouped into clients.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Partition {
    /// One client per value of the client field (one per speaking role in the plays): the
    /// realistic non-IID split.
    Natural,
    /// The natural partition's records pooled, shuffled and dealt out evenly to as many clients.
    Iid,
    /// Pooled and shuffled, then cut into as many clients with sizes drawn from a symmetric
    /// Dirichlet(`alpha`) (smaller alpha: more skew); each keeps at least the minimum.
    Dirichlet { alpha: f64 },
}

/// One client's data.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientData {
    pub id: String,
    pub train: Vec<Record>,
    pub test: Vec<Record>,
}

/// How clients are made.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSplit {
    pub partition: Partition,
    /// Clients (of the natural partition) with fewer records are left out.
    pub min_examples: usize,
    /// The last share of each client's records (at least one) is its local test split: the
    /// text it writes after what it trained on.
    pub test_fraction: f64,
    pub seed: u64,
    /// IID and Dirichlet: clients to deal the pooled records to (0: as many as the natural
    /// partition has), at most as many as can get the minimum each.
    pub num_clients: usize,
}

/// Groups `records` into clients as `split` says, in a fixed order (first appearance).
pub fn build_clients(records: &[Record], split: &ClientSplit) -> Vec<ClientData> {
    let natural: Vec<(String, Vec<Record>)> = group_by_client(records)
        .into_iter()
        .filter(|(_, r)| r.len() >= split.min_examples.max(2))
        .collect();
    let groups = match split.partition {
        Partition::Natural => natural,
        Partition::Iid => {
            let n = dealt(&natural, split);
            let pooled = shuffled_pool(natural, split.seed);
            let mut groups: Vec<Vec<Record>> = vec![Vec::new(); n];
            for (i, r) in pooled.into_iter().enumerate() {
                groups[i % n.max(1)].push(r);
            }
            named(groups, "iid")
        }
        Partition::Dirichlet { alpha } => {
            let n = dealt(&natural, split);
            let pooled = shuffled_pool(natural, split.seed);
            let sizes = dirichlet_sizes(
                pooled.len(),
                n,
                split.min_examples.max(2),
                alpha,
                split.seed,
            );
            let mut rest = pooled.into_iter();
            named(
                sizes
                    .into_iter()
                    .map(|s| rest.by_ref().take(s).collect())
                    .collect(),
                "dirichlet",
            )
        }
    };
    groups
        .into_iter()
        .map(|(id, records)| {
            let n_test = ((records.len() as f64 * split.test_fraction).ceil() as usize)
                .clamp(1, records.len() - 1);
            let mut train = records;
            let test = train.split_off(train.len() - n_test);
            ClientData { id, train, test }
        })
        .collect()
}

/// How many clients a pooled partition deals to: as asked (or as many as the natural
/// partition has), but no more than can each get the minimum of records.
fn dealt(natural: &[(String, Vec<Record>)], split: &ClientSplit) -> usize {
    let records: usize = natural.iter().map(|(_, r)| r.len()).sum();
    let wanted = match split.num_clients {
        0 => natural.len(),
        n => n,
    };
    wanted.min(records / split.min_examples.max(2))
}

/// Splits off a seeded `fraction` of the clients that never train (at least one when there
/// are two or more clients and the fraction is positive). Returns (training, unseen), each in
/// the original order.
pub fn hold_out(
    clients: Vec<ClientData>,
    fraction: f64,
    seed: u64,
) -> (Vec<ClientData>, Vec<ClientData>) {
    let n = clients.len();
    let k = if fraction > 0.0 && n >= 2 {
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_C11E));
    let unseen: std::collections::BTreeSet<usize> = idx.into_iter().take(k).collect();
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, c) in clients.into_iter().enumerate() {
        if unseen.contains(&i) {
            &mut held
        } else {
            &mut train
        }
        .push(c);
    }
    (train, held)
}

fn group_by_client(records: &[Record]) -> Vec<(String, Vec<Record>)> {
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut groups: Vec<(String, Vec<Record>)> = Vec::new();
    for r in records {
        let i = *index.entry(&r.client).or_insert_with(|| {
            groups.push((r.client.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r.clone());
    }
    groups
}

fn shuffled_pool(groups: Vec<(String, Vec<Record>)>, seed: u64) -> Vec<Record> {
    let mut pool: Vec<Record> = groups.into_iter().flat_map(|(_, r)| r).collect();
    pool.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    pool
}

fn named(groups: Vec<Vec<Record>>, kind: &str) -> Vec<(String, Vec<Record>)> {
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| g.len() >= 2)
        .map(|(i, g)| (format!("{kind}-{i:05}"), g))
        .collect()
}

/// `n` client sizes summing to `total`, each at least `min` (when `total` allows), the rest
/// shared in Dirichlet(`alpha`) proportions.
fn dirichlet_sizes(total: usize, n: usize, min: usize, alpha: f64, seed: u64) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let floor = min.min(total / n);
    let spare = total - floor * n;
    // A symmetric Dirichlet sample is independent Gamma(alpha, 1) draws, normalised.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00D1_71C4);
    let draws: Vec<f64> = match Gamma::new(alpha.max(1e-3), 1.0) {
        Ok(g) => (0..n).map(|_| g.sample(&mut rng)).collect(),
        Err(_) => vec![1.0; n],
    };
    let sum: f64 = draws.iter().sum();
    let weights: Vec<f64> = if sum > 0.0 {
        draws.iter().map(|d| d / sum).collect()
    } else {
        vec![1.0 / n as f64; n]
    };
    let mut sizes: Vec<usize> = weights[..n]
        .iter()
        .map(|w| floor + (w * spare as f64).floor() as usize)
        .collect();
    // Rounding leaves a few records over: the largest clients take them.
    let mut left = total - sizes.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[i] += 1;
        left -= 1;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        // Client c has 3·(c+1) records.
        (0..6)
            .flat_map(|c| {
                (0..3 * (c + 1)).map(move |k| Record {
                    client: format!("role-{c}"),
                    text: format!("line {k} of {c}"),
                    reply: None,
                })
            })
            .collect()
    }

    fn split(partition: Partition) -> ClientSplit {
        ClientSplit {
            partition,
            min_examples: 6,
            test_fraction: 0.2,
            seed: 3,
            num_clients: 0,
        }
    }

    #[test]
    fn natural_keeps_roles_drops_small_ones_and_tests_on_the_latest_text() {
        let clients = build_clients(&records(), &split(Partition::Natural));
        let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["role-1", "role-2", "role-3", "role-4", "role-5"]);
        let c = &clients[4]; // 18 records: 4 for test, the last ones
        assert_eq!((c.train.len(), c.test.len()), (14, 4));
        assert_eq!(c.test[0].text, "line 14 of 5");
        assert!(
            clients
                .iter()
                .all(|c| c.train.iter().all(|r| r.client == c.id))
        );
    }

    #[test]
    fn iid_and_dirichlet_keep_every_record_and_the_client_count() {
        let natural = build_clients(&records(), &split(Partition::Natural));
        let total = |cs: &[ClientData]| {
            cs.iter()
                .map(|c| c.train.len() + c.test.len())
                .sum::<usize>()
        };
        let iid = build_clients(&records(), &split(Partition::Iid));
        assert_eq!((iid.len(), total(&iid)), (natural.len(), total(&natural)));
        let sizes: Vec<usize> = iid.iter().map(|c| c.train.len() + c.test.len()).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );

        let skewed = build_clients(&records(), &split(Partition::Dirichlet { alpha: 0.3 }));
        assert_eq!(
            (skewed.len(), total(&skewed)),
            (natural.len(), total(&natural))
        );
        assert!(skewed.iter().all(|c| c.train.len() + c.test.len() >= 6));
        assert_eq!(
            skewed,
            build_clients(&records(), &split(Partition::Dirichlet { alpha: 0.3 }))
        );
    }

    #[test]
    fn held_out_clients_are_seeded_and_disjoint() {
        let clients = build_clients(&records(), &split(Partition::Natural));
        let (train, unseen) = hold_out(clients.clone(), 0.4, 9);
        assert_eq!((train.len(), unseen.len()), (3, 2));
        assert!(unseen.iter().all(|u| !train.iter().any(|t| t.id == u.id)));
        assert_eq!(hold_out(clients.clone(), 0.4, 9).1, unseen);
        assert_eq!(hold_out(clients, 0.0, 9).1.len(), 0);
    }
}
