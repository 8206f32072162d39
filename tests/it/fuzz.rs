//! The config loader never panics, whatever it is given (RELIABILITY.md): arbitrary
//! bytes, YAML-ish token soup (anchors, aliases, flow and block collections), and
//! mutations of the shipped example, with and without `--set` overrides. Runs in
//! every `cargo test` (3 × 1,000 cases; `LOYALTY_FUZZ_CASES=N` for more, as CI does).

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("LOYALTY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn load(text: &str, sets: &[String]) {
    // Ok or Err are both fine; a panic fails the property.
    let _ = loyalty::config::from_str(text, "fuzz.yaml", sets);
}

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "input:",
        "  orders: o.parquet",
        "orders:",
        "columns:",
        "rfm:",
        "bins: 5",
        "segments:",
        "- name: x",
        "  r: [1, 2]",
        "clv:",
        "model: bgnbd",
        "pareto:",
        "abc:",
        "a: 0.8",
        "&a",
        "*a",
        "&b [*a, *a]",
        "<<: *a",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "- ",
        "  ",
        "\n",
        "'",
        "\"",
        "#",
        "!!int",
        "!!binary",
        "~",
        "null",
        "1e400",
        "-0",
        "0x1F",
        ".nan",
        "2024-02-30",
        "as_of:",
        "output:",
        "formats: [csv]",
        "dir: '{as_of}'",
        "\t",
        "? ",
        "|",
        ">",
        "---",
        "...",
        "%YAML 1.2",
        "\u{feff}",
        "é",
        "\0",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load(&String::from_utf8_lossy(&bytes), &[]);
    }

    #[test]
    fn yaml_token_soup(tokens in prop::collection::vec(token(), 0..80), separators in prop::collection::vec(prop::bool::ANY, 80)) {
        let mut text = String::new();
        for (token, newline) in tokens.iter().zip(separators) {
            text.push_str(token);
            text.push(if newline { '\n' } else { ' ' });
        }
        load(&text, &[]);
    }

    #[test]
    fn mutated_example(
        at in any::<prop::sample::Index>(),
        cut in 0usize..40,
        insert in "[ -~\n]{0,12}",
        sets in prop::collection::vec("[a-z_.]{1,24}=[ -~]{0,16}", 0..3),
    ) {
        let example = include_str!("../../config/example.yaml");
        let mut bytes = example.as_bytes().to_vec();
        let start = at.index(bytes.len());
        let end = (start + cut).min(bytes.len());
        bytes.splice(start..end, insert.bytes());
        load(&String::from_utf8_lossy(&bytes), &sets);
    }
}
