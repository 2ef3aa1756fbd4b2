//! How a vocabulary entry's text turns back into the bytes it stands for.
//!
//! Byte-level BPE vocabularies (GPT-2 and its descendants) spell every byte as one printable
//! character: bytes that are already printable and not a space stand for themselves, the
//! others (controls, space, 0x7F–0xA0, 0xAD) are moved up to U+0100 onwards in byte order.
//! SentencePiece vocabularies write a space as U+2581 and spell bytes with no piece of their
//! own as `<0xNN>`.

use std::sync::OnceLock;

/// The SentencePiece space marker `▁` (U+2581).
pub(crate) const SPM_SPACE: char = '\u{2581}';

/// Whether byte `b` is spelled as itself in the byte-level alphabet.
fn is_direct(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte-level alphabet: `table()[b]` is the character that spells byte `b`.
fn table() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = ['\0'; 256];
        for b in 0..=255u8 {
            t[usize::from(b)] = char::from(b);
        }
        for (k, &b) in moved().iter().enumerate() {
            let cp = 256 + u32::try_from(k).unwrap_or(0);
            t[usize::from(b)] = char::from_u32(cp).unwrap_or('\u{FFFD}');
        }
        t
    })
}

/// The byte a byte-level character spells, if it is one.
pub(crate) fn byte_of_char(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if cp < 256 {
        let b = u8::try_from(cp).ok()?;
        return is_direct(b).then_some(b);
    }
    // The moved bytes are numbered from U+0100 in increasing byte order.
    let k = usize::try_from(cp - 256).ok()?;
    moved().get(k).copied()
}

/// The bytes not spelled as themselves, in increasing order (spelled U+0100, U+0101, …).
fn moved() -> &'static [u8] {
    static MOVED: OnceLock<Vec<u8>> = OnceLock::new();
    MOVED.get_or_init(|| (0..=255u8).filter(|&b| !is_direct(b)).collect())
}

/// The character spelling byte `b` in the byte-level alphabet.
pub(crate) fn char_of_byte(b: u8) -> char {
    table()[usize::from(b)]
}

/// The bytes a byte-level token text stands for. A character outside the byte-level alphabet
/// (which a well-formed vocabulary never has) stands for its own UTF-8 encoding.
pub(crate) fn byte_level_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match byte_of_char(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// The byte-level spelling of `bytes` (the inverse of [`byte_level_decode`]).
#[cfg(test)]
pub(crate) fn byte_level_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char_of_byte(b)).collect()
}

/// The byte a `<0xNN>` byte token stands for.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The text of a SentencePiece piece, with `▁` turned back into spaces.
pub(crate) fn spm_piece_bytes(text: &str) -> Vec<u8> {
    text.replace(SPM_SPACE, " ").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(byte_of_char(char_of_byte(b)), Some(b), "byte {b}");
        }
        assert_eq!(char_of_byte(b' '), 'Ġ');
        assert_eq!(char_of_byte(b'\n'), 'Ċ');
        assert_eq!(char_of_byte(b'a'), 'a');
        assert_eq!(byte_of_char('€'), None);
    }

    #[test]
    fn decodes_byte_level_text() {
        let s = "héllo wörld 日本 🎉\t\n";
        assert_eq!(
            byte_level_decode(&byte_level_encode(s.as_bytes())),
            s.as_bytes()
        );
        assert_eq!(byte_level_decode("Ġthe"), b" the");
    }

    #[test]
    fn parses_byte_tokens() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x0>"), None);
        assert_eq!(parse_byte_token("<0xZZ>"), None);
        assert_eq!(parse_byte_token("a"), None);
        assert_eq!(spm_piece_bytes("▁the▁cat"), b" the cat");
    }
}
