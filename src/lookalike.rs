//! Characters that hide text from a matcher without changing how it reads: invisible code
//! points and letters of other scripts that look like Latin ones. One table for the Sentinel
//! (which folds prompts before its keyword rules) and the output shield (which folds answers
//! before looking for the system prompt, the canary and secrets).

/// Default-ignorable code points (Unicode `Default_Ignorable_Code_Point`): zero-width
/// characters, joiners, bidi controls, variation selectors, fillers and tags. They render as
/// nothing, so a word sprinkled with them reads as the plain word.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Joiners and variation selectors: invisible, but normal inside emoji and ideographic
/// variation sequences, so their presence alone is no sign of a disguise.
pub fn is_sequence_glue(c: char) -> bool {
    matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Lowercase Cyrillic and Greek letters that look like a Latin letter.
pub fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' | 'α' => 'a',
        'в' | 'β' | 'ь' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'ε' => 'e',
        'һ' => 'h',
        'і' | 'ї' | 'ι' | 'ı' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'п' | 'η' => 'n',
        'о' | 'ο' | 'σ' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' | 'μ' => 'u',
        'ν' => 'v',
        'ш' | 'ԝ' | 'ω' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        _ => return None,
    })
}

/// Capital Cyrillic and Greek letters that look like a Latin capital (`АКІА` for `AKIA`).
pub fn confusable_capital(c: char) -> Option<char> {
    Some(match c {
        'А' | 'Α' => 'A',
        'В' | 'Β' => 'B',
        'С' | 'Ϲ' => 'C',
        'Е' | 'Ё' | 'Ε' => 'E',
        'Н' | 'Η' => 'H',
        'І' | 'Ї' | 'Ι' => 'I',
        'Ј' => 'J',
        'К' | 'Κ' => 'K',
        'Ӏ' => 'I',
        'М' | 'Μ' => 'M',
        'Ν' => 'N',
        'О' | 'Ο' => 'O',
        'Р' | 'Ρ' => 'P',
        'Ԛ' => 'Q',
        'Ѕ' => 'S',
        'Т' | 'Τ' => 'T',
        'Ԝ' => 'W',
        'Х' | 'Χ' => 'X',
        'У' | 'Ү' | 'Υ' => 'Y',
        'Ζ' => 'Z',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_map_to_the_latin_letter_of_their_case() {
        for c in ('\u{0370}'..='\u{052F}').filter(|c| confusable(*c).is_some()) {
            assert!(c.is_lowercase(), "{c:?} in the lowercase table");
        }
        for c in ('\u{0370}'..='\u{052F}').filter(|c| confusable_capital(*c).is_some()) {
            assert!(c.is_uppercase(), "{c:?} in the capital table");
        }
        let word: String = "АКІА".chars().map(|c| confusable_capital(c).unwrap_or(c)).collect();
        assert_eq!(word, "AKIA");
    }

    #[test]
    fn glue_is_invisible() {
        for c in ['\u{200D}', '\u{FE0F}', '\u{E0100}', '\u{E01EF}'] {
            assert!(is_invisible(c) && is_sequence_glue(c), "{c:?}");
        }
        for c in ['a', ' ', '\u{3000}', 'é', '🚀'] {
            assert!(!is_invisible(c), "{c:?}");
        }
    }
}
