//! Encoding detection and segment counting (GSM 03.38 / 3GPP TS 23.038).
//!
//! A text that fits the GSM 7-bit default alphabet, with its extension table, is sent as GSM-7;
//! anything else as UCS-2 (in practice UTF-16, so characters outside the Basic Multilingual Plane
//! take two code units). A single SMS carries 160 septets or 70 UTF-16 units; a concatenated one
//! loses room to the user data header and carries 153 septets or 67 units per part. Phones do not
//! split an escape sequence or a surrogate pair across parts, so neither do we when counting.

use std::fmt;

/// Septets in a single-part GSM-7 message.
const GSM7_SINGLE: u32 = 160;
/// Septets per part of a concatenated GSM-7 message.
const GSM7_PART: u32 = 153;
/// UTF-16 code units in a single-part UCS-2 message.
const UCS2_SINGLE: u32 = 70;
/// UTF-16 code units per part of a concatenated UCS-2 message.
const UCS2_PART: u32 = 67;

/// Text encoding chosen for an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The GSM 7-bit default alphabet, including its extension table.
    Gsm7,
    /// UCS-2 (UTF-16 code units), for any text that does not fit GSM-7.
    Ucs2,
}

impl Encoding {
    /// The name used in status events and metrics: `"gsm7"` or `"ucs2"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`analyze`] found out about a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextInfo {
    /// The encoding the text will be sent in.
    pub encoding: Encoding,
    /// How many SMS parts the text takes; 0 only for the empty text.
    pub segments: u32,
    /// Septets (GSM-7, extension chars count 2) or UTF-16 code units (UCS-2).
    pub units: u32,
}

/// Septets `c` takes in GSM-7: 1 in the default alphabet, 2 in the extension table (escape
/// plus the character), `None` when GSM-7 cannot carry it.
///
/// The default alphabet has 128 positions; position 0x1B is the escape to the extension table
/// and not a character, which leaves 127 characters. The extension table adds 10 (form feed
/// and `^{}\[~]|€`); its other positions are reserved or national.
#[inline]
fn gsm7_septets(c: char) -> Option<u32> {
    match c {
        // Default alphabet, ASCII part: LF, CR, 0x20..=0x5A (space to Z, including `$` and `@`),
        // `_` and a..z. Not there: the backtick, DEL, other control characters, and the
        // characters of the extension table below.
        '\n' | '\r' | ' '..='Z' | '_' | 'a'..='z' => Some(1),
        // Default alphabet, the rest (in table order).
        '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' => Some(1),
        // Greek capitals; written as code points so that look-alikes (U+2206 INCREMENT,
        // U+2126 OHM SIGN) cannot slip in.
        '\u{0394}' // Δ
        | '\u{03A6}' // Φ
        | '\u{0393}' // Γ
        | '\u{039B}' // Λ
        | '\u{03A9}' // Ω
        | '\u{03A0}' // Π
        | '\u{03A8}' // Ψ
        | '\u{03A3}' // Σ
        | '\u{0398}' // Θ
        | '\u{039E}' // Ξ
        => Some(1),
        'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡' | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö' | 'ñ'
        | 'ü' | 'à' => Some(1),
        // Extension table: form feed and `^{}\[~]|€`.
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Whether every character of `text` can be sent in GSM-7 (default alphabet or extension table).
/// The empty text is GSM-7.
#[must_use]
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// Detects the encoding of `text` and counts its units and segments.
///
/// GSM-7 when every character is in the default alphabet or the extension table (which costs
/// two septets), else UCS-2. A text that fits one SMS (160 septets / 70 UTF-16 units) is one
/// segment; a longer one is split into parts of 153 septets / 67 units, never splitting an
/// escape sequence or a surrogate pair, so a part may carry one unit less. The empty text gives
/// 0 segments and 0 units in GSM-7 (the daemon rejects it before asking).
///
/// This runs once per message: one pass over the text, no allocation.
#[must_use]
pub fn analyze(text: &str) -> TextInfo {
    let mut septets = Packer::new(GSM7_PART);
    let mut utf16 = Packer::new(UCS2_PART);
    let mut gsm7 = true;
    for c in text.chars() {
        if gsm7 {
            match gsm7_septets(c) {
                Some(n) => septets.push(n),
                None => gsm7 = false,
            }
        }
        // At most 2, so the cast is lossless.
        utf16.push(c.len_utf16() as u32);
    }
    if gsm7 { septets.finish(Encoding::Gsm7, GSM7_SINGLE) } else { utf16.finish(Encoding::Ucs2, UCS2_SINGLE) }
}

/// Counts units and packs them into parts of `part` units, where each push is an unsplittable
/// group (one character: 1 or 2 septets, 1 or 2 UTF-16 units).
struct Packer {
    part: u32,
    units: u32,
    /// Parts already full.
    full: u32,
    /// Units in the part being filled.
    fill: u32,
}

impl Packer {
    fn new(part: u32) -> Self {
        Packer { part, units: 0, full: 0, fill: 0 }
    }

    #[inline]
    fn push(&mut self, n: u32) {
        self.units = self.units.saturating_add(n);
        if self.fill + n > self.part {
            self.full = self.full.saturating_add(1);
            self.fill = n;
        } else {
            self.fill += n;
        }
    }

    fn finish(self, encoding: Encoding, single: u32) -> TextInfo {
        let segments = if self.units == 0 {
            0
        } else if self.units <= single {
            1
        } else {
            // More than `single` units means the current part holds something.
            self.full.saturating_add(1)
        };
        TextInfo { encoding, segments, units: self.units }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(encoding: Encoding, segments: u32, units: u32) -> TextInfo {
        TextInfo { encoding, segments, units }
    }

    fn gsm(segments: u32, units: u32) -> TextInfo {
        info(Encoding::Gsm7, segments, units)
    }

    fn ucs(segments: u32, units: u32) -> TextInfo {
        info(Encoding::Ucs2, segments, units)
    }

    #[test]
    fn encoding_names() {
        assert_eq!(Encoding::Gsm7.as_str(), "gsm7");
        assert_eq!(Encoding::Ucs2.as_str(), "ucs2");
        assert_eq!(Encoding::Ucs2.to_string(), "ucs2");
    }

    #[test]
    fn empty_text() {
        assert_eq!(analyze(""), gsm(0, 0));
        assert!(is_gsm7(""));
    }

    #[test]
    fn gsm7_segment_boundaries() {
        let a = |n| "a".repeat(n);
        assert_eq!(analyze(&a(1)), gsm(1, 1));
        assert_eq!(analyze(&a(160)), gsm(1, 160));
        assert_eq!(analyze(&a(161)), gsm(2, 161));
        assert_eq!(analyze(&a(306)), gsm(2, 306));
        assert_eq!(analyze(&a(307)), gsm(3, 307));
        assert_eq!(analyze(&a(459)), gsm(3, 459));
        assert_eq!(analyze(&a(460)), gsm(4, 460));
    }

    #[test]
    fn extension_chars_cost_two_septets() {
        assert_eq!(analyze(&"€".repeat(80)), gsm(1, 160));
        assert_eq!(analyze(&"€".repeat(81)), gsm(2, 162));
        assert_eq!(analyze("{x}"), gsm(1, 5));
        assert_eq!(analyze("\u{0C}"), gsm(1, 2));
    }

    #[test]
    fn escape_sequence_is_not_split_across_parts() {
        // Naively 306 septets = 2 parts; but '€' (2 septets) does not fit in the last septet of
        // part 1, so part 1 carries 152, part 2 would need 154 > 153, and a third part follows.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(analyze(&text), gsm(3, 306));
        // One plain char less and it fits in two parts: 152 + (2 + 151).
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(151));
        assert_eq!(analyze(&text), gsm(2, 305));
        // With the '€' fully inside part 1 the same length stays at two parts.
        let text = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(analyze(&text), gsm(2, 306));
    }

    #[test]
    fn ucs2_segment_boundaries() {
        let cyr = |n| "ж".repeat(n);
        assert_eq!(analyze(&cyr(70)), ucs(1, 70));
        assert_eq!(analyze(&cyr(71)), ucs(2, 71));
        assert_eq!(analyze(&cyr(134)), ucs(2, 134));
        assert_eq!(analyze(&cyr(135)), ucs(3, 135));
        assert_eq!(analyze("Привет"), ucs(1, 6));
    }

    #[test]
    fn emoji_are_two_units() {
        assert_eq!(analyze("😀"), ucs(1, 2));
        assert_eq!(analyze(&"😀".repeat(35)), ucs(1, 70));
        // 36 emoji = 72 units: 33 fit a part (66 units; a 34th would be split), 3 go in part 2.
        assert_eq!(analyze(&"😀".repeat(36)), ucs(2, 72));
        // 67 emoji = 134 units: 33 + 33 + 1 because no part may carry half an emoji.
        assert_eq!(analyze(&"😀".repeat(67)), ucs(3, 134));
    }

    #[test]
    fn surrogate_pair_is_not_split_across_parts() {
        // 66 + 2 + 66 = 134 units, naively 2 parts; the emoji cannot take unit 67 alone, so
        // part 1 carries 66, part 2 would need 68 > 67, and a third part follows.
        let text = format!("{}😀{}", "ж".repeat(66), "ж".repeat(66));
        assert_eq!(analyze(&text), ucs(3, 134));
        let text = format!("{}😀{}", "ж".repeat(65), "ж".repeat(67));
        assert_eq!(analyze(&text), ucs(2, 134));
    }

    #[test]
    fn one_non_gsm_char_makes_the_whole_text_ucs2() {
        let text = format!("{}ç", "a".repeat(100));
        assert!(!is_gsm7(&text));
        assert_eq!(analyze(&text), ucs(2, 101));
        // The extension chars count one UTF-16 unit each once the text is UCS-2.
        assert_eq!(analyze("€€ç"), ucs(1, 3));
        assert_eq!(analyze("Your code is 1234 ✓"), ucs(1, 19));
        assert_eq!(analyze("Your code is 1234"), gsm(1, 17));
    }

    #[test]
    fn default_alphabet_and_extension_table() {
        let basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                     ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
        assert_eq!(basic.chars().count(), 127);
        for c in basic.chars() {
            assert_eq!(gsm7_septets(c), Some(1), "{c:?} is in the default alphabet");
        }
        for c in "\u{0C}^{}\\[~]|€".chars() {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?} is in the extension table");
        }
        for c in [
            'ç', '`', '\u{1B}', '\t', '\u{7F}', '\0', 'ê', 'á', 'Ë', 'Ā', 'α', 'Α', '\u{2206}', '\u{2126}',
            'ж', '😀', '\u{A0}',
        ] {
            assert_eq!(gsm7_septets(c), None, "{c:?} is not GSM-7");
        }
        // Exactly the 127 + 10 characters of the standard, nothing else.
        let (mut one, mut two) = (0, 0);
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            match gsm7_septets(c) {
                Some(1) => one += 1,
                Some(2) => two += 1,
                Some(n) => panic!("{c:?} costs {n}"),
                None => {}
            }
        }
        assert_eq!((one, two), (127, 10));
    }

    #[test]
    fn analyze_never_panics_and_is_consistent_per_char() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let s: &str = c.encode_utf8(&mut buf);
            let got = analyze(s);
            let expected = match gsm7_septets(c) {
                Some(n) => gsm(1, n),
                None => ucs(1, c.len_utf16() as u32),
            };
            assert_eq!(got, expected, "{c:?}");
            assert_eq!(is_gsm7(s), got.encoding == Encoding::Gsm7);
        }
    }
}
