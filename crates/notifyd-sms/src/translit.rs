//! Transliteration to plain ASCII for providers that accept only Latin letters, digits and a
//! few signs.

/// Rewrites `text` in plain ASCII, for providers that accept only Latin letters, digits and
/// common signs (the smsco.ge plugin uses it).
///
/// - ASCII is kept as it is, except control characters other than tab, line feed and carriage
///   return, which become `?`;
/// - accented Latin letters (Latin-1 and Latin Extended-A, Romanian ș/ț) lose their accents:
///   `é` → `e`, `ł` → `l`; ligatures and special letters are spelt out: `Æ` → `AE`/`Ae`,
///   `ß` → `ss`, `Þ` → `Th`; combining accents are dropped;
/// - Cyrillic (Russian, Ukrainian, Belarusian, Serbian/Macedonian letters) follows a simple
///   BGN-like romanisation: `ж` → `zh`, `щ` → `shch`, `я` → `ya`, hard and soft signs vanish;
/// - Georgian (Mkhedruli, and Mtavruli capitals) follows the 2002 national system, which needs
///   no apostrophes: `ქ`/`კ` → `k`, `ღ` → `gh`, `ყ` → `q`;
/// - typographic quotes, dashes, spaces and the ellipsis become their ASCII forms; invisible
///   characters (zero-width spaces, soft hyphen, byte-order mark) are dropped;
/// - everything else becomes `?`.
///
/// A capital that spells as several letters is written in capitals when it stands among
/// capitals (`ЩИ` → `SHCHI`) and capitalised otherwise (`Щука` → `Shchuka`).
///
/// ```
/// # use notifyd_sms::transliterate;
/// assert_eq!(transliterate("Привет, мир!"), "Privet, mir!");
/// assert_eq!(transliterate("გამარჯობა"), "gamarjoba");
/// ```
#[must_use]
pub fn transliterate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev_upper = false;
    while let Some(c) = chars.next() {
        match map(c) {
            Some(Repl::Letter(latin, false)) => out.push_str(latin),
            Some(Repl::Letter(latin, true)) => {
                let next = chars.peek().copied();
                let among_capitals = match next {
                    Some(n) if n.is_uppercase() => true,
                    Some(n) if n.is_lowercase() => false,
                    _ => prev_upper,
                };
                let mut letters = latin.chars();
                if let Some(first) = letters.next() {
                    out.push(first.to_ascii_uppercase());
                }
                if among_capitals {
                    out.extend(letters.map(|l| l.to_ascii_uppercase()));
                } else {
                    out.extend(letters);
                }
            }
            Some(Repl::Text(s)) => out.push_str(s),
            Some(Repl::Keep) => out.push(c),
            None => out.push('?'),
        }
        prev_upper = c.is_uppercase();
    }
    out
}

/// What a character becomes.
enum Repl {
    /// The character itself (plain ASCII).
    Keep,
    /// A letter: its spelling in lowercase ASCII, and whether the original was a capital.
    Letter(&'static str, bool),
    /// Anything else, written as is (possibly nothing).
    Text(&'static str),
}

/// Latin Extended-A (U+0100..=U+017F), one base letter per code point, in lowercase. The
/// ligatures Ĳ/ĳ (U+0132/3), Œ/œ (U+0152/3) and ŉ (U+0149) are handled before this table.
const LATIN_EXTENDED_A: &str = concat!(
    "aaaaaa",       // Ā ā Ă ă Ą ą
    "cccccccc",     // Ć ć Ĉ ĉ Ċ ċ Č č
    "dddd",         // Ď ď Đ đ
    "eeeeeeeeee",   // Ē ē Ĕ ĕ Ė ė Ę ę Ě ě
    "gggggggg",     // Ĝ ĝ Ğ ğ Ġ ġ Ģ ģ
    "hhhh",         // Ĥ ĥ Ħ ħ
    "iiiiiiiiii",   // Ĩ ĩ Ī ī Ĭ ĭ Į į İ ı
    "ii",           // Ĳ ĳ (handled separately)
    "jj",           // Ĵ ĵ
    "kkk",          // Ķ ķ ĸ
    "llllllllll",   // Ĺ ĺ Ļ ļ Ľ ľ Ŀ ŀ Ł ł
    "nnnnnnnnn",    // Ń ń Ņ ņ Ň ň ŉ Ŋ ŋ
    "oooooo",       // Ō ō Ŏ ŏ Ő ő
    "oo",           // Œ œ (handled separately)
    "rrrrrr",       // Ŕ ŕ Ŗ ŗ Ř ř
    "ssssssss",     // Ś ś Ŝ ŝ Ş ş Š š
    "tttttt",       // Ţ ţ Ť ť Ŧ ŧ
    "uuuuuuuuuuuu", // Ũ ũ Ū ū Ŭ ŭ Ů ů Ű ű Ų ų
    "ww",           // Ŵ ŵ
    "yyy",          // Ŷ ŷ Ÿ
    "zzzzzz",       // Ź ź Ż ż Ž ž
    "s",            // ſ
);
const _: () = assert!(LATIN_EXTENDED_A.len() == 0x80);

/// Cyrillic U+0430..=U+044F (а..я); the capitals U+0410..=U+042F use the same entries.
const CYRILLIC_BASIC: [&str; 32] = [
    "a", "b", "v", "g", "d", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p", // а..п
    "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya", // р..я
];

/// Cyrillic U+0450..=U+045F (ѐ ё ђ ѓ є ѕ і ї ј љ њ ћ ќ ѝ ў џ); the capitals U+0400..=U+040F use
/// the same entries.
const CYRILLIC_EXTRA: [&str; 16] =
    ["e", "yo", "dj", "gj", "ye", "dz", "i", "yi", "j", "lj", "nj", "c", "kj", "i", "u", "dz"];

/// Georgian Mkhedruli U+10D0..=U+10F6 (ა..ჰ, then the archaic ჱ ჲ ჳ ჴ ჵ ჶ), national system of
/// 2002. Mtavruli capitals U+1C90..=U+1CB6 use the same entries.
const GEORGIAN: [&str; 39] = [
    "a", "b", "g", "d", "e", "v", "z", "t", "i", "k", "l", "m", "n", "o", "p", "zh", // ა..ჟ
    "r", "s", "t", "u", "p", "k", "gh", "q", "sh", "ch", "ts", "dz", "ts", "ch", "kh", "j", // რ..ჯ
    "h", // ჰ
    "e", "y", "w", "q", "o", "f", // ჱ ჲ ჳ ჴ ჵ ჶ
];

/// Index of `c` in a table that starts at `base`.
fn offset(c: char, base: u32) -> usize {
    (c as u32 - base) as usize
}

fn map(c: char) -> Option<Repl> {
    use Repl::{Keep, Letter, Text};
    let repl = match c {
        '\t' | '\n' | '\r' | ' '..='~' => Keep,

        // Latin-1 Supplement: letters.
        'À'..='Å' => Letter("a", true),
        'Æ' => Letter("ae", true),
        'Ç' => Letter("c", true),
        'È'..='Ë' => Letter("e", true),
        'Ì'..='Ï' => Letter("i", true),
        'Ð' => Letter("d", true),
        'Ñ' => Letter("n", true),
        'Ò'..='Ö' | 'Ø' => Letter("o", true),
        'Ù'..='Ü' => Letter("u", true),
        'Ý' => Letter("y", true),
        'Þ' => Letter("th", true),
        'ß' => Letter("ss", false),
        'à'..='å' => Letter("a", false),
        'æ' => Letter("ae", false),
        'ç' => Letter("c", false),
        'è'..='ë' => Letter("e", false),
        'ì'..='ï' => Letter("i", false),
        'ð' => Letter("d", false),
        'ñ' => Letter("n", false),
        'ò'..='ö' | 'ø' => Letter("o", false),
        'ù'..='ü' => Letter("u", false),
        'ý' | 'ÿ' => Letter("y", false),
        'þ' => Letter("th", false),

        // Latin Extended-A.
        'Ĳ' => Letter("ij", true),
        'ĳ' => Letter("ij", false),
        'Œ' => Letter("oe", true),
        'œ' => Letter("oe", false),
        'ŉ' => Text("'n"),
        '\u{100}'..='\u{17F}' => {
            let i = offset(c, 0x100);
            Letter(&LATIN_EXTENDED_A[i..=i], c.is_uppercase())
        }
        // A few from Latin Extended-B: Romanian comma-below letters, the florin.
        'Ș' => Letter("s", true),
        'ș' => Letter("s", false),
        'Ț' => Letter("t", true),
        'ț' => Letter("t", false),
        'ƒ' => Letter("f", false),

        // Cyrillic.
        '\u{410}'..='\u{42F}' => Letter(CYRILLIC_BASIC[offset(c, 0x410)], true),
        '\u{430}'..='\u{44F}' => Letter(CYRILLIC_BASIC[offset(c, 0x430)], false),
        '\u{400}'..='\u{40F}' => Letter(CYRILLIC_EXTRA[offset(c, 0x400)], true),
        '\u{450}'..='\u{45F}' => Letter(CYRILLIC_EXTRA[offset(c, 0x450)], false),
        'Ґ' => Letter("g", true),
        'ґ' => Letter("g", false),

        // Georgian.
        '\u{10D0}'..='\u{10F6}' => Letter(GEORGIAN[offset(c, 0x10D0)], false),
        '\u{1C90}'..='\u{1CB6}' => Letter(GEORGIAN[offset(c, 0x1C90)], true),

        // Spaces, invisible characters and combining accents.
        '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => Text(" "),
        '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{300}'..='\u{36F}' => Text(""),

        // Typographic signs.
        '‘' | '’' | '‚' | '‛' | '′' | '´' | 'ʼ' | '‹' | '›' => Text("'"),
        '“' | '”' | '„' | '‟' | '″' | '«' | '»' => Text("\""),
        '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' => Text("-"),
        '…' => Text("..."),
        '•' => Text("*"),
        '·' => Text("."),
        '¡' => Text("!"),
        '¿' => Text("?"),
        '×' => Text("x"),
        '÷' => Text("/"),
        '©' => Text("(c)"),
        '®' => Text("(R)"),
        '™' => Text("TM"),
        '№' => Text("No"),
        '€' => Text("EUR"),
        '₾' => Text("GEL"),
        '₽' => Text("RUB"),
        '₴' => Text("UAH"),

        _ => return None,
    };
    Some(repl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let cases = [
            ("Привет", "Privet"),
            ("Привет, мир!", "Privet, mir!"),
            ("Ваш код: 1234", "Vash kod: 1234"),
            ("Щука и ёж", "Shchuka i yozh"),
            ("ЩИ", "SHCHI"),
            ("ЖУК", "ZHUK"),
            ("Жук", "Zhuk"),
            ("СЪЕЗД", "SEZD"),
            ("Київ", "Kiyiv"),
            ("Ґанок", "Ganok"),
            ("гамарджоба", "gamardzhoba"),
            ("გამარჯობა", "gamarjoba"),
            ("თბილისი", "tbilisi"),
            ("ქუთაისი", "kutaisi"),
            ("შენი კოდია 1234", "sheni kodia 1234"),
            ("ᲒᲐᲛᲐᲠᲯᲝᲑᲐ", "GAMARJOBA"),
            ("Ærøskøbing", "Aeroskobing"),
            ("ÆRØ", "AERO"),
            ("Straße", "Strasse"),
            ("Crème brûlée", "Creme brulee"),
            ("Łódź", "Lodz"),
            ("Ştefan Ș ț", "Stefan S t"),
            ("Œuvre", "Oeuvre"),
            ("Þór", "Thor"),
            ("Cafe\u{301}", "Cafe"),
        ];
        for (input, want) in cases {
            assert_eq!(transliterate(input), want, "{input:?}");
        }
    }

    #[test]
    fn signs_and_unknowns() {
        assert_eq!(transliterate("“Hi” – it’s 5 €…"), "\"Hi\" - it's 5 EUR...");
        assert_eq!(transliterate("a\u{A0}b\u{200B}c\u{AD}d"), "a bcd");
        assert_eq!(transliterate("line\r\nnext\tcol"), "line\r\nnext\tcol");
        assert_eq!(transliterate("ok 😀 日本 α"), "ok ? ?? ?");
        assert_eq!(transliterate("bell\u{7}"), "bell?");
        assert_eq!(transliterate(""), "");
    }

    #[test]
    fn latin_extended_a_table() {
        for (c, want) in [
            ('Ā', "A"),
            ('č', "c"),
            ('Đ', "D"),
            ('ę', "e"),
            ('Ğ', "G"),
            ('ħ', "h"),
            ('İ', "I"),
            ('ı', "i"),
            ('Ĵ', "J"),
            ('ĸ', "k"),
            ('Ł', "L"),
            ('ŋ', "n"),
            ('ő', "o"),
            ('Ř', "R"),
            ('š', "s"),
            ('Ŧ', "T"),
            ('ų', "u"),
            ('Ŵ', "W"),
            ('Ÿ', "Y"),
            ('ž', "z"),
            ('ſ', "s"),
            ('Ĳ', "Ij"),
        ] {
            assert_eq!(transliterate(&c.to_string()), want, "{c:?}");
        }
    }

    #[test]
    fn output_is_always_ascii() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let s = format!("{c}{c}x{c}");
            let out = transliterate(&s);
            assert!(out.is_ascii(), "{c:?} gave {out:?}");
            if map(c).is_none() {
                assert_eq!(out, "??x?", "{c:?}");
            }
        }
    }
}
