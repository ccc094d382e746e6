//! The real all-MiniLM-L6-v2, pulled into the default model store.

use std::sync::OnceLock;

use sandpiper_embed::{EmbedError, Embedder, Input};
use sandpiper_models::{catalog, Progress, Store};

fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let spec = catalog::default_embedding();
        let store = Store::open_default().expect("model store");
        let path = store
            .ensure(&spec, Progress::Hide)
            .expect("pulling the model");
        Embedder::load(&spec.name, &path).expect("loading the model")
    })
}

fn text(s: &str) -> Input {
    Input::Text(s.to_owned())
}

fn one(input: Input) -> Vec<f32> {
    embedder().embed(&[input]).unwrap().vectors.remove(0)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn info_and_unit_vectors() {
    let info = embedder().info();
    assert_eq!(
        (info.dim, info.max_tokens, info.vocab_size, info.pooling),
        (384, 256, 30522, "mean")
    );
    let out = embedder()
        .embed(&[text("This is a test."), text("héllo wörld 🦀")])
        .unwrap();
    assert_eq!(out.vectors.len(), 2);
    for v in &out.vectors {
        assert_eq!(v.len(), 384);
        assert!((dot(v, v).sqrt() - 1.0).abs() < 1e-5, "{}", dot(v, v));
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // [CLS] this is a test . [SEP]
    assert_eq!(out.token_counts[0], 7);
    assert_ne!(out.vectors[0], out.vectors[1]);
}

#[test]
fn paraphrases_are_closer_than_unrelated_sentences() {
    let e = |s| one(text(s));
    let guitar = e("A man is playing a guitar.");
    let paraphrase = e("Someone is playing an instrument.");
    let unrelated = e("The stock market fell sharply today.");
    let close = dot(&guitar, &paraphrase);
    let far = dot(&guitar, &unrelated);
    assert!(close > 0.4, "paraphrase similarity {close}");
    assert!(far < 0.2, "unrelated similarity {far}");
    assert!(close > far + 0.3, "{close} vs {far}");

    let cat = e("The cat sits on the mat.");
    let kitten = e("A kitten is resting on a rug.");
    let rates = e("Interest rates were raised by the central bank.");
    assert!(dot(&cat, &kitten) > dot(&cat, &rates) + 0.3);
    assert!(dot(&rates, &unrelated) > dot(&rates, &guitar));
}

#[test]
fn a_batch_equals_its_inputs_one_by_one() {
    // Different lengths, so the batch pads and masks.
    let texts = [
        "Short.",
        "A somewhat longer sentence about embeddings and how they are pooled.",
        "Medium length input here.",
    ];
    let batch = embedder().embed(&texts.map(text)).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = embedder().embed(&[text(t)]).unwrap();
        let diff = max_diff(&batch.vectors[i], &single.vectors[0]);
        assert!(diff < 1e-5, "{t}: {diff}");
        assert_eq!(batch.token_counts[i], single.token_counts[0]);
    }
    // More than one forward pass' worth, in order.
    let many: Vec<Input> = (0..sandpiper_embed::MAX_BATCH + 3)
        .map(|i| text(&format!("sentence number {i}")))
        .collect();
    let out = embedder().embed(&many).unwrap();
    assert_eq!(out.vectors.len(), many.len());
    let last = one(many.last().unwrap().clone());
    assert!(max_diff(out.vectors.last().unwrap(), &last) < 1e-5);
}

#[test]
fn token_ids_embed_like_their_text() {
    let s = "Token arrays are embedded like the text they came from.";
    let ids = embedder().tokenize(s).unwrap();
    assert!(ids.len() > 5);
    let from_ids = embedder().embed(&[Input::Tokens(ids.clone())]).unwrap();
    let from_text = embedder().embed(&[text(s)]).unwrap();
    assert!(max_diff(&from_ids.vectors[0], &from_text.vectors[0]) < 1e-6);
    assert_eq!(from_ids.token_counts[0], ids.len() + 2);

    match embedder().embed(&[Input::Tokens(vec![101, 30522])]) {
        Err(EmbedError::BadToken { id: 30522, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_inputs_are_truncated_to_256_tokens() {
    let long: String = (0..400).map(|i| format!("word{i} ")).collect();
    let ids = embedder().tokenize(&long).unwrap();
    assert!(ids.len() > 300, "{}", ids.len());
    let out = embedder().embed(&[text(&long)]).unwrap();
    assert_eq!(out.token_counts[0], 256);
    // The same as its first 254 tokens plus [CLS] and [SEP]...
    let head = one(Input::Tokens(ids[..254].to_vec()));
    assert!(max_diff(&out.vectors[0], &head) < 1e-5);
    // ...and the tail makes no difference, while the head does.
    let mut other_tail = ids[..254].to_vec();
    other_tail.extend_from_slice(&ids[..100]);
    let out2 = embedder().embed(&[Input::Tokens(other_tail)]).unwrap();
    assert_eq!(out2.token_counts[0], 256);
    assert!(max_diff(&out2.vectors[0], &head) < 1e-5);
    let shorter = one(Input::Tokens(ids[..200].to_vec()));
    assert!(max_diff(&shorter, &head) > 1e-3);
}

/// Reference values from an independent float64 numpy implementation of the
/// same computation (BERT forward from the safetensors, tokens from the Python
/// `tokenizers` package, mean pooling, L2 norm): the first and last four
/// components and the sum of all 384.
#[test]
fn matches_an_independent_reference() {
    let cases: [(&str, usize, [f32; 8], f32); 2] = [
        (
            "This is a test.",
            7,
            [
                0.0335908, 0.0105125, -0.0174998, 0.0293518, 0.112463, -0.0015141, 0.0875773,
                -0.041718,
            ],
            0.285_923_2,
        ),
        (
            "A man is playing a guitar.",
            9,
            [
                0.0216641, -0.0048642, -0.0096491, -0.0634012, -0.0413594, -0.01908, 0.081746,
                -0.0186547,
            ],
            0.040_264_1,
        ),
    ];
    for (input, tokens, want, want_sum) in cases {
        let out = embedder().embed(&[text(input)]).unwrap();
        let v = &out.vectors[0];
        assert_eq!(out.token_counts[0], tokens, "{input}");
        let got: Vec<f32> = v[..4].iter().chain(&v[380..]).copied().collect();
        assert!(max_diff(&got, &want) < 1e-5, "{input}: {got:?}");
        let sum: f32 = v.iter().sum();
        assert!((sum - want_sum).abs() < 1e-4, "{input}: sum {sum}");
    }
}
