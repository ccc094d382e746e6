//! Numbers as English words: cardinals, ordinals, years, decimals, money.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const SCALES: [&str; 7] = [
    "",
    "thousand",
    "million",
    "billion",
    "trillion",
    "quadrillion",
    "quintillion",
];

fn below_thousand(n: u64, out: &mut Vec<String>) {
    let (h, rest) = (n / 100, n % 100);
    if h > 0 {
        out.push(format!("{} hundred", ONES[h as usize]));
    }
    if rest > 0 {
        out.push(below_hundred(rest));
    }
}

fn below_hundred(n: u64) -> String {
    if n < 20 {
        ONES[n as usize].to_string()
    } else if n.is_multiple_of(10) {
        TENS[(n / 10) as usize].to_string()
    } else {
        format!("{}-{}", TENS[(n / 10) as usize], ONES[(n % 10) as usize])
    }
}

/// `1234` → "one thousand two hundred thirty-four".
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".into();
    }
    let mut groups = Vec::new();
    let mut rest = n;
    while rest > 0 {
        groups.push(rest % 1000);
        rest /= 1000;
    }
    let mut words = Vec::new();
    for (i, g) in groups.iter().enumerate().rev() {
        if *g == 0 {
            continue;
        }
        below_thousand(*g, &mut words);
        if i > 0 {
            words.push(SCALES[i].to_string());
        }
    }
    words.join(" ")
}

/// `21` → "twenty-first".
pub fn ordinal(n: u64) -> String {
    let c = cardinal(n);
    // Change the last word: "twenty-one" → "twenty-first", "hundred" → "hundredth".
    let split = c.rfind([' ', '-']).map_or(0, |i| i + 1);
    let (head, last) = c.split_at(split);
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// A year as people say it: 1999 "nineteen ninety-nine", 2005 "two thousand
/// five", 2024 "twenty twenty-four", 1900 "nineteen hundred".
pub fn year(n: u64) -> String {
    let (hi, lo) = (n / 100, n % 100);
    if !(1000..10000).contains(&n) || (n % 1000 < 10 && n / 1000 == 2) || n.is_multiple_of(1000) {
        return cardinal(n);
    }
    if lo == 0 {
        format!("{} hundred", below_hundred(hi))
    } else if lo < 10 {
        format!("{} oh {}", below_hundred(hi), ONES[lo as usize])
    } else {
        format!("{} {}", below_hundred(hi), below_hundred(lo))
    }
}

/// Digits one by one: "3.14" → the "one four" after "point".
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A plain number as written: `-1,234.5` → "minus one thousand two hundred
/// thirty-four point five". `None` if `s` is not one.
pub fn number(s: &str) -> Option<String> {
    let (neg, body) = match s.strip_prefix(['-', '−']) {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let int_digits: String = int.chars().filter(|c| *c != ',').collect();
    if int_digits.is_empty() && frac.is_none() {
        return None;
    }
    if !int_digits.chars().all(|c| c.is_ascii_digit())
        || frac.is_some_and(|f| f.is_empty() || !f.chars().all(|c| c.is_ascii_digit()))
        || !valid_grouping(int)
    {
        return None;
    }
    let mut words = String::new();
    if neg {
        words.push_str("minus ");
    }
    if int_digits.is_empty() {
        words.push_str("zero");
    } else if int_digits.len() > 18 {
        words.push_str(&digits(&int_digits));
    } else {
        words.push_str(&cardinal(int_digits.parse().ok()?));
    }
    if let Some(f) = frac {
        words.push_str(" point ");
        words.push_str(&digits(f));
    }
    Some(words)
}

/// `1,234,567` groups in threes; no commas at all is fine too.
fn valid_grouping(int: &str) -> bool {
    if !int.contains(',') {
        return true;
    }
    let parts: Vec<&str> = int.split(',').collect();
    !parts[0].is_empty() && parts[0].len() <= 3 && parts[1..].iter().all(|p| p.len() == 3)
}

/// An amount of money: `"1,234.56"` with ("dollar", "dollars", "cent",
/// "cents") → "one thousand two hundred thirty-four dollars and fifty-six cents".
pub fn money(amount: &str, unit: (&str, &str), sub: (&str, &str)) -> Option<String> {
    let (int, frac) = match amount.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (amount, None),
    };
    let int_digits: String = int.chars().filter(|c| *c != ',').collect();
    let whole: u64 = if int_digits.is_empty() {
        0
    } else {
        if !valid_grouping(int) || int_digits.len() > 18 {
            return None;
        }
        int_digits.parse().ok()?
    };
    let cents: u64 = match frac {
        None => 0,
        Some(f) if f.len() == 2 && f.chars().all(|c| c.is_ascii_digit()) => f.parse().ok()?,
        Some(f) if f.len() == 1 && f.chars().all(|c| c.is_ascii_digit()) => {
            f.parse::<u64>().ok()? * 10
        }
        Some(_) => return None,
    };
    let name = |n: u64, (one, many): (&str, &str)| {
        format!("{} {}", cardinal(n), if n == 1 { one } else { many })
    };
    Some(match (whole, cents) {
        (0, c) if c > 0 => name(c, sub),
        (w, 0) => name(w, unit),
        (w, c) => format!("{} and {}", name(w, unit), name(c, sub)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(13), "thirteen");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(99), "ninety-nine");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(1234), "one thousand two hundred thirty-four");
        assert_eq!(cardinal(2_000_005), "two million five");
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty-first");
        assert_eq!(ordinal(100), "one hundredth");
        assert_eq!(ordinal(15), "fifteenth");
    }

    #[test]
    fn years() {
        assert_eq!(year(1999), "nineteen ninety-nine");
        assert_eq!(year(2024), "twenty twenty-four");
        assert_eq!(year(2005), "two thousand five");
        assert_eq!(year(2000), "two thousand");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(1905), "nineteen oh five");
    }

    #[test]
    fn numbers_and_money() {
        assert_eq!(number("3.14").unwrap(), "three point one four");
        assert_eq!(number("-1,000").unwrap(), "minus one thousand");
        assert_eq!(number("1,00"), None);
        assert_eq!(number("12a"), None);
        let usd = (("dollar", "dollars"), ("cent", "cents"));
        assert_eq!(
            money("5.50", usd.0, usd.1).unwrap(),
            "five dollars and fifty cents"
        );
        assert_eq!(money("1", usd.0, usd.1).unwrap(), "one dollar");
        assert_eq!(money("0.01", usd.0, usd.1).unwrap(), "one cent");
        assert_eq!(
            money("1,200", usd.0, usd.1).unwrap(),
            "one thousand two hundred dollars"
        );
        assert_eq!(money("1.234", usd.0, usd.1), None);
    }
}
