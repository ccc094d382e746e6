//! The real voice (en_US-joe-medium from the model store), real ONNX Runtime
//! (the PyPI wheel's library, or ORT_DYLIB_PATH) and the real espeak-ng.

use std::sync::{Arc, OnceLock};

use sandpiper_models::{catalog, Progress, Store};
use sandpiper_voice::{runtime, Voice};

fn voice() -> Arc<Voice> {
    static VOICE: OnceLock<Arc<Voice>> = OnceLock::new();
    VOICE
        .get_or_init(|| {
            let store = Store::open_default().unwrap();
            let spec = catalog::default_voice();
            let model = store.ensure(&spec, Progress::Hide).unwrap();
            let config = store.companion_path(&spec, &spec.companions[0]);
            let library = runtime::locate(None, &store, Progress::Hide).unwrap();
            Arc::new(Voice::load(&spec.name, &model, &config, &library, 2).unwrap())
        })
        .clone()
}

fn rms(s: &[f32]) -> f32 {
    (s.iter().map(|x| x * x).sum::<f32>() / s.len().max(1) as f32).sqrt()
}

#[test]
fn speaks_a_sentence_at_a_plausible_length() {
    let v = voice();
    assert_eq!(v.config().sample_rate, 22050);
    let text = "The quick brown fox jumps over the lazy dog, twice.";
    let s = v.synthesize(text, 1.0).unwrap();
    let secs = s.samples.len() as f32 / 22050.0;
    // ~10 words: English speech runs at 2-4 words a second.
    assert!((1.5..7.0).contains(&secs), "{secs} s for {text:?}");
    assert!(rms(&s.samples) > 0.01, "silent: rms {}", rms(&s.samples));
    assert!(
        s.phonemes.contains(','),
        "clause punctuation kept: {}",
        s.phonemes
    );
    let rtf = s.infer_time.as_secs_f32() / secs;
    eprintln!("real-time factor {rtf:.3} ({secs:.2} s of audio)");
}

#[test]
fn speed_scales_duration_inversely() {
    let v = voice();
    let text = "Speed changes how long this sentence takes to say.";
    let normal = v.synthesize(text, 1.0).unwrap().samples.len() as f32;
    let fast = v.synthesize(text, 2.0).unwrap().samples.len() as f32;
    let slow = v.synthesize(text, 0.5).unwrap().samples.len() as f32;
    let (f, s) = (normal / fast, slow / normal);
    // VITS gives every phoneme at least one frame, so 2x is not quite half.
    assert!((1.4..2.6).contains(&f), "2x speed gave {f}x shorter");
    assert!((1.4..2.6).contains(&s), "0.5x speed gave {s}x longer");
}

#[test]
fn nothing_to_say_is_no_audio() {
    let s = voice().synthesize(" ... ", 1.0).unwrap();
    assert!(s.samples.is_empty());
}

#[test]
fn parallel_calls_match_serial_ones_in_length() {
    let v = voice();
    let texts = [
        "One short sentence.",
        "A rather longer sentence, with a pause in the middle of it.",
    ];
    let serial: Vec<usize> = texts
        .iter()
        .map(|t| v.synthesize(t, 1.0).unwrap().samples.len())
        .collect();
    let handles: Vec<_> = texts
        .iter()
        .map(|t| {
            let v = v.clone();
            let t = t.to_string();
            std::thread::spawn(move || v.synthesize(&t, 1.0).unwrap().samples.len())
        })
        .collect();
    let parallel: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (a, b) in serial.iter().zip(&parallel) {
        // VITS samples durations (noise_w): lengths vary a little run to run.
        let ratio = *a as f32 / *b as f32;
        assert!(
            (0.8..1.25).contains(&ratio),
            "serial {serial:?} vs parallel {parallel:?}"
        );
    }
    assert!(parallel[1] > parallel[0] * 2, "{parallel:?}");
}

#[test]
fn phonemes_match_pipers_own() {
    // What Piper's phonemiser (espeak-ng library, clause terminators put back)
    // gives for these, checked against piper-tts 1.8.0.
    use unicode_normalization::UnicodeNormalization;
    let e = sandpiper_voice::Espeak::new("en-us").unwrap();
    for (text, piper) in [
        (
            "The quick brown fox jumps over the lazy dog, twice.",
            "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ, twˈaɪs.",
        ),
        (
            "It costs five dollars; okay?",
            "ɪt kˈɔsts fˈaɪv dˈɑːlɚz; oʊkˈeɪ?",
        ),
    ] {
        let want: String = piper.nfd().collect();
        assert_eq!(e.phonemize(text).unwrap(), want, "{text}");
    }
}

#[test]
fn espeak_phonemes_for_a_clause_batch() {
    let e = sandpiper_voice::Espeak::new("en-us").unwrap();
    let p = e.phonemize("Hello, world! Bonjour café.").unwrap();
    assert!(
        p.contains(',') && p.contains('!') && p.ends_with('.'),
        "{p}"
    );
    assert!(!p.contains("(fr)") && !p.contains("(en)"), "{p}");
}
