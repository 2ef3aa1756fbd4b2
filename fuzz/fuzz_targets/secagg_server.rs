//! What a server's secure round takes from devices: arbitrary `SecAggRequest` messages (keys,
//! shares, reveals) and masked words from any cohort member, interleaved with stage closes,
//! after the cohort advertised real keys. Each is refused or taken, never a panic, and
//! unmasking whatever came in returns a sum or an error.
#![no_main]

use std::collections::BTreeSet;
use std::time::Instant;

use fedtune_proto::v1;
use fedtune_secagg::protocol::Device;
use fedtune_server::secagg::round::{SecAggRound, Stage};
use fedtune_server::SecAggSettings;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rand::SeedableRng;

const N: usize = 5;
const PARAMS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let cohort: BTreeSet<String> = (0..N).map(|i| format!("c{i}")).collect();
    let sizing = SecAggSettings::default().sizing(N).unwrap();
    let mut round = SecAggRound::new(&cohort, sizing, 3, PARAMS, 7, vec![1; 16], Instant::now());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut devices = Vec::new();
    for (i, c) in cohort.iter().enumerate() {
        let setup = round.setup_for(c).unwrap();
        let params = fedtune_secagg::protocol::Params {
            threshold: setup.threshold as usize,
            context: setup.context.to_vec(),
        };
        let d = Device::new(i as u32, setup.neighbours.clone(), params, &mut rng);
        let a = d.advert();
        let keys = v1::SecAggKeys {
            c_public: a.c_public.to_vec().into(),
            s_public: a.s_public.to_vec().into(),
            ..Default::default()
        };
        if i + 1 < N {
            round.advertise(c, keys).unwrap();
        }
        devices.push(d);
    }
    // Operations: [client, op, len] then len bytes of message.
    let mut rest = data;
    while let [client, op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let who = format!("c{}", client % (N as u8 + 1));
        match op % 6 {
            0 => {
                let _ = round.close(Instant::now());
            }
            1 => {
                let words: Vec<u32> = body
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                    .collect();
                let _ = round.add_masked(&who, &words);
            }
            _ => {
                let Ok(req) = v1::SecAggRequest::decode(body) else { continue };
                match req.step {
                    Some(v1::sec_agg_request::Step::Advertise(k)) => {
                        let _ = round.advertise(&who, k);
                    }
                    Some(v1::sec_agg_request::Step::Share(s)) => {
                        let _ = round.share(&who, s);
                    }
                    Some(v1::sec_agg_request::Step::Reveal(r)) => {
                        let _ = round.reveal(&who, &r);
                    }
                    _ => {}
                }
            }
        }
        let _ = round.adverts_for(&who);
        let _ = round.inbox_for(&who);
        let _ = round.unmask_for(&who);
        let _ = round.stage_complete();
    }
    if round.stage == Stage::Ready {
        if let Ok(sum) = round.finish() {
            assert_eq!(sum.len(), PARAMS + 1);
        }
    }
});
