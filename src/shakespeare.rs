//! The embedded default dataset: 32 of Shakespeare's plays, one JSON record per utterance
//! (`play`, `genre`, `act`, `scene`, `speaker`, `text`), compressed into the binary so that
//! `fedtune simulate` and `fedtune pretrain` run offline with no arguments.
//!
//! The plays are split once, here: [`PRETRAIN_PLAYS`] train the embedded base model
//! (`fedtune pretrain`); every other play's speaking roles are the simulated clients, so no
//! client's text was ever seen by the base model.

use std::io::Read;

use crate::text_data::{Record, Records};

/// `plays.jsonl` (public domain texts; see `assets/README.md`), zstd level 19.
const PLAYS_ZST: &[u8] = include_bytes!("../assets/shakespeare-plays.jsonl.zst");

/// The plays the embedded base model is pretrained on (about a quarter of the text, all five
/// genres); no simulated client comes from them.
pub const PRETRAIN_PLAYS: &[&str] = &[
    "richard-iii",
    "henry-iv-part-2",
    "cymbeline",
    "troilus-and-cressida",
    "antony-and-cleopatra",
    "the-merry-wives-of-windsor",
    "love-s-labours-lost",
    "timon-of-athens",
];

/// The dataset as JSON Lines bytes.
pub fn jsonl() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(7 << 20);
    zstd::stream::read::Decoder::new(PLAYS_ZST)?.read_to_end(&mut out)?;
    Ok(out)
}

/// `--where play=…` conditions selecting [`PRETRAIN_PLAYS`].
pub fn pretrain_filters() -> Vec<crate::text_data::Where> {
    PRETRAIN_PLAYS
        .iter()
        .map(|p| crate::text_data::Where {
            key: "play".into(),
            value: (*p).into(),
        })
        .collect()
}

/// Whether a record of the plays belongs to a pretraining play (by the `play/…` client id
/// the `play+speaker` client field makes).
pub fn is_pretraining(client: &str) -> bool {
    let play = client.split('/').next().unwrap_or("");
    PRETRAIN_PLAYS.contains(&play)
}

/// The smart-reply pairs of the plays: each utterance answering a different speaker's
/// utterance just before it in the same scene. The client is the replying role
/// (`play/SPEAKER`), the text the message, the reply the utterance.
pub fn reply_pairs(jsonl: &[u8]) -> Records {
    let mut out = Records::default();
    let mut prev: Option<(String, String, String)> = None; // (scene key, speaker, text)
    for record in crate::text_data::json_lines(jsonl) {
        let Some(r) = record else {
            out.skipped += 1;
            prev = None;
            continue;
        };
        let field = |k: &str| r.get(k).map(|v| v.to_string()).unwrap_or_default();
        let str_field = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let scene = format!("{}|{}|{}", field("play"), field("act"), field("scene"));
        let (speaker, text) = (str_field("speaker"), str_field("text"));
        if speaker.is_empty() || text.trim().is_empty() {
            out.skipped += 1;
            prev = None;
            continue;
        }
        if let Some((s, who, message)) = &prev
            && *s == scene
            && *who != speaker
        {
            out.records.push(Record {
                client: format!("{}/{speaker}", str_field("play")),
                text: message.clone(),
                reply: Some(text.clone()),
            });
        }
        prev = Some((scene, speaker, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text_data::parse_jsonl;

    #[test]
    fn embedded_plays_decompress_and_the_pretraining_plays_exist() {
        let bytes = jsonl().unwrap();
        let all = parse_jsonl(&bytes, "text", &[]);
        assert_eq!((all.texts.len(), all.skipped), (26_399, 0));
        let pre = parse_jsonl(&bytes, "text", &pretrain_filters());
        for play in PRETRAIN_PLAYS {
            let one = parse_jsonl(&bytes, "text", &[format!("play={play}").parse().unwrap()]);
            assert!(one.texts.len() > 500, "{play}: {}", one.texts.len());
        }
        let share = pre.texts.len() as f64 / all.texts.len() as f64;
        assert!((0.15..0.35).contains(&share), "{share}");
    }

    #[test]
    fn reply_pairs_answer_another_speaker_in_the_same_scene() {
        let data = br#"{"play": "p", "act": 1, "scene": 1, "speaker": "A", "text": "Who's there?"}
{"play": "p", "act": 1, "scene": 1, "speaker": "B", "text": "Nay, answer me."}
{"play": "p", "act": 1, "scene": 1, "speaker": "B", "text": "Stand."}
{"play": "p", "act": 1, "scene": 2, "speaker": "A", "text": "New scene."}
{"play": "p", "act": 1, "scene": 2, "speaker": "C", "text": "Reply."}
"#;
        let pairs = reply_pairs(data);
        let got: Vec<(&str, &str, &str)> = pairs
            .records
            .iter()
            .map(|r| {
                (
                    r.client.as_str(),
                    r.text.as_str(),
                    r.reply.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("p/B", "Who's there?", "Nay, answer me."),
                ("p/C", "New scene.", "Reply.")
            ]
        );
        let all = reply_pairs(&jsonl().unwrap());
        assert!(all.records.len() > 15_000, "{}", all.records.len());
        assert!(is_pretraining("hamlet/HAMLET") == PRETRAIN_PLAYS.contains(&"hamlet"));
        assert!(is_pretraining(&format!("{}/X", PRETRAIN_PLAYS[0])));
    }
}
