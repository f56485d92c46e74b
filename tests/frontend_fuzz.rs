//! Random mutations of every zoo file must never panic the front end: each either compiles or
//! yields diagnostics that render.

use proptest::prelude::*;
use resnetc::frontend::{compile_source, pretty_source};
use resnetc::ir::Mode;
use std::path::PathBuf;

fn zoo() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "resnet"))
        .collect();
    v.sort();
    v.iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    ";",
    "->",
    "x",
    "/",
    "//",
    "*",
    "-",
    "+",
    "(",
    ")",
    ",",
    ":",
    "=",
    "0",
    "1",
    "7",
    "99999",
    "99999999999999999999",
    "conv",
    "bn",
    "relu",
    "avgpool",
    "maxpool 3x3",
    "fc",
    "flatten",
    "dropout 0.5",
    "dropout 1",
    "dropout",
    "softmax",
    "as",
    "as conv1",
    "shortcut",
    "A",
    "C",
    "none",
    "in",
    "width",
    "stride",
    "block",
    "model",
    "param",
    "stages",
    "head",
    "stem",
    "pad same",
    "groups 3",
    "bias",
    "\n",
    "#",
    "é",
    "\u{0}",
    "1e999",
    "3x3",
    "0x0",
    "layer1:",
    "add(a)",
    "x = in",
];

#[derive(Clone, Debug)]
enum Mutation {
    DeleteChars(usize, usize),
    InsertChar(usize, char),
    ReplaceChar(usize, char),
    InsertToken(usize, usize),
    ReplaceWord(usize, usize),
    DeleteWord(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..6usize).prop_map(|(a, n)| Mutation::DeleteChars(a, n)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Mutation::InsertChar(a, c)),
        (any::<usize>(), proptest::char::range(' ', '~'))
            .prop_map(|(a, c)| Mutation::ReplaceChar(a, c)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(a, t)| Mutation::InsertToken(a, t)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(a, t)| Mutation::ReplaceWord(a, t)),
        any::<usize>().prop_map(Mutation::DeleteWord),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn boundary(s: &str, i: usize) -> usize {
    if s.is_empty() {
        return 0;
    }
    let mut i = i % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Byte ranges of the whitespace-separated words of `s`.
fn words(s: &str) -> Vec<(usize, usize)> {
    let mut v = vec![];
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(b)) => {
                v.push((b, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        v.push((b, s.len()));
    }
    v
}

fn apply(mut s: String, m: &Mutation) -> String {
    match *m {
        Mutation::DeleteChars(a, n) => {
            let a = boundary(&s, a);
            let b = boundary(&s, (a + n).min(s.len()));
            if b >= a {
                s.replace_range(a..b, "");
            }
        }
        Mutation::InsertChar(a, c) => {
            let a = boundary(&s, a);
            s.insert(a, c);
        }
        Mutation::ReplaceChar(a, c) => {
            let a = boundary(&s, a);
            if let Some(old) = s[a..].chars().next() {
                s.replace_range(a..a + old.len_utf8(), &c.to_string());
            }
        }
        Mutation::InsertToken(a, t) => {
            let a = boundary(&s, a);
            s.insert_str(a, &format!(" {} ", TOKENS[t]));
        }
        Mutation::ReplaceWord(w, t) => {
            let ws = words(&s);
            if !ws.is_empty() {
                let (a, b) = ws[w % ws.len()];
                s.replace_range(a..b, TOKENS[t]);
            }
        }
        Mutation::DeleteWord(w) => {
            let ws = words(&s);
            if !ws.is_empty() {
                let (a, b) = ws[w % ws.len()];
                s.replace_range(a..b, "");
            }
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = s.lines().collect();
            if !lines.is_empty() {
                let n = lines.len();
                lines.swap(a % n, b % n);
                s = lines.join("\n");
            }
        }
        Mutation::Truncate(a) => {
            let a = boundary(&s, a);
            s.truncate(a);
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_zoo_files_never_panic(
        file in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let zoo = zoo();
        let mut src = zoo[file.index(zoo.len())].clone();
        for m in &muts {
            src = apply(src, m);
        }
        for mode in [Mode::Inference, Mode::Training] {
            match compile_source("fuzz.resnet", &src, mode, &[]) {
                Ok(g) => prop_assert!(resnetc::ir::verify(&g).is_ok()),
                Err(d) => {
                    prop_assert!(!d.items.is_empty());
                    prop_assert_eq!(d.exit_code(), 2, "{}", d.render_plain());
                    let text = d.render_plain();
                    prop_assert!(text.contains("fuzz.resnet") || d.items.iter().all(|i| i.labels.is_empty()));
                }
            }
        }
        if let Ok(p) = pretty_source("fuzz.resnet", &src) {
            // Whatever parses pretty-prints to text that parses again.
            prop_assert!(pretty_source("pretty.resnet", &p).is_ok(), "{}", p);
        }
    }
}
