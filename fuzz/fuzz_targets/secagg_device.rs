//! What a device takes from the server in a secure round: a task's `SecAggSetup` and the
//! answers to its steps (neighbours' keys, sealed shares, an unmask request), all arbitrary.
//! Each is refused or used, never a panic, and an honest device never reveals both secrets
//! of one device.
#![no_main]

use fedtune_client::runtime::{advert_from_wire, checked_setup, inbox_from_wire};
use fedtune_proto::v1;
use fedtune_secagg::protocol::{Device, Secret};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = usize::from(split).min(rest.len());
    let (setup, answers) = rest.split_at(cut);
    let Ok(setup) = v1::SecAggSetup::decode(setup) else { return };
    let Ok((params, quantizer)) = checked_setup(&setup) else { return };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut device = Device::new(setup.index, setup.neighbours.clone(), params, &mut rng);
    let Ok(answer) = v1::SecAggResponse::decode(answers) else { return };
    let Some(outcome) = answer.outcome else { return };
    use v1::sec_agg_response::Outcome;
    match outcome {
        Outcome::Adverts(a) => {
            let adverts: Vec<_> = a.adverts.iter().filter_map(advert_from_wire).collect();
            let _ = device.share(&adverts, &mut rng);
        }
        Outcome::Inbox(inbox) => {
            let inbox = inbox_from_wire(&inbox);
            let encoded = quantizer.encode(&[0.5, -0.25, 3.0], 2, &mut rng);
            if let Ok(masked) = device.mask(&inbox, &encoded) {
                assert_eq!(masked.len(), encoded.len());
            }
        }
        Outcome::Unmask(u) => {
            if let Ok(reveals) = device.unmask(&u.survivors, &u.dropped) {
                for r in reveals {
                    let named = match r.secret {
                        Secret::SelfSeed => &u.survivors,
                        Secret::MaskKey => &u.dropped,
                    };
                    assert!(named.contains(&r.about));
                    assert!(!(u.survivors.contains(&r.about) && u.dropped.contains(&r.about)));
                }
            }
        }
        _ => {}
    }
});
