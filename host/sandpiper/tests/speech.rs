//! `/v1/audio/speech` over real HTTP: the speech guest, the real Piper voice
//! on real ONNX Runtime, and the real espeak-ng.

mod common;

use std::io::Read;
use std::time::Instant;

use base64::Engine as _;
use common::{sse_events, Server};
use serde_json::{json, Value};

const VOICE: &str = "en_US-joe-medium";
const RATE: u32 = 22050;

/// Three sentences, 28 words, with numbers and money to normalise.
const TEXT: &str = "Sandpiper reads text aloud on a small computer. \
    It costs $5.50 and ships on 2024-03-15. \
    Every answer is spoken in a clear and steady voice!";

/// Only the voice: starts faster than the full default set.
fn server() -> Server {
    Server::start(&["--model", VOICE])
}

struct Audio {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

fn speak(server: &Server, body: &Value) -> Audio {
    let resp = Server::client()
        .post(server.url("/v1/audio/speech"))
        .json(body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().unwrap().to_vec();
    Audio {
        status,
        headers,
        body,
    }
}

fn header<'a>(a: &'a Audio, name: &str) -> &'a str {
    a.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn pcm_samples(bytes: &[u8]) -> Vec<i16> {
    assert_eq!(bytes.len() % 2, 0, "odd PCM length");
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn rms(s: &[i16]) -> f64 {
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

fn secs(samples: &[i16]) -> f64 {
    samples.len() as f64 / f64::from(RATE)
}

/// 28 words of English at a natural pace: 2 to 4.5 words a second.
fn assert_plausible(samples: &[i16], what: &str) {
    let d = secs(samples);
    assert!(
        (28.0 / 4.5..28.0 / 2.0).contains(&d),
        "{what}: {d:.2} s for 28 words"
    );
    assert!(
        rms(samples) > 500.0,
        "{what}: silent (rms {:.0})",
        rms(samples)
    );
    // Speech has pauses: a good share of near-silent samples and of loud ones.
    let loud = samples.iter().filter(|s| s.unsigned_abs() > 3000).count();
    assert!(loud > samples.len() / 20, "{what}: hardly any loud samples");
}

#[test]
fn each_format_decodes_with_the_right_headers() {
    let server = server();
    let mut durations = Vec::new();
    for format in ["wav", "pcm", "flac"] {
        let a = speak(
            &server,
            &json!({"model": VOICE, "input": TEXT, "voice": VOICE, "response_format": format}),
        );
        assert_eq!(
            a.status,
            200,
            "{format}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(header(&a, "x-sample-rate"), "22050", "{format}");
        assert_eq!(header(&a, "x-channels"), "1", "{format}");
        assert_eq!(header(&a, "x-voice"), VOICE, "{format}");
        let samples: Vec<i16> = match format {
            "wav" => {
                assert_eq!(header(&a, "content-type"), "audio/wav");
                let reader = hound::WavReader::new(std::io::Cursor::new(&a.body)).unwrap();
                let spec = reader.spec();
                assert_eq!(
                    (spec.channels, spec.sample_rate, spec.bits_per_sample),
                    (1, RATE, 16)
                );
                assert_eq!(spec.sample_format, hound::SampleFormat::Int);
                let s: Vec<i16> = reader.into_samples().collect::<Result<_, _>>().unwrap();
                assert_eq!(a.body.len(), 44 + 2 * s.len(), "wav length fields");
                s
            }
            "pcm" => {
                assert_eq!(header(&a, "content-type"), "audio/pcm");
                assert_eq!(header(&a, "x-sample-format"), "s16le");
                pcm_samples(&a.body)
            }
            _ => {
                assert_eq!(header(&a, "content-type"), "audio/flac");
                let mut reader = claxon::FlacReader::new(std::io::Cursor::new(&a.body)).unwrap();
                let info = reader.streaminfo();
                assert_eq!(
                    (info.channels, info.sample_rate, info.bits_per_sample),
                    (1, RATE, 16)
                );
                let s: Vec<i16> = reader
                    .samples()
                    .map(|s| s.unwrap() as i16)
                    .collect::<Vec<_>>();
                assert!(a.body.len() < s.len() * 2, "FLAC should compress");
                s
            }
        };
        assert_plausible(&samples, format);
        durations.push(secs(&samples));
    }
    // VITS samples durations, so runs differ a little, not a lot.
    let (min, max) = durations
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
    assert!(max / min < 1.3, "durations differ too much: {durations:?}");

    // Voices are listed, and speech models appear in /v1/models with their kind.
    let (status, voices) = server.get("/v1/audio/voices");
    assert_eq!(status, 200);
    let v = &voices["data"][0];
    assert_eq!(
        (v["id"].as_str(), v["sample_rate"].as_u64()),
        (Some(VOICE), Some(22050))
    );
    assert!(v["aliases"].as_array().unwrap().contains(&json!("alloy")));
    let (_, models) = server.get("/v1/models");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == VOICE && m["kind"] == "speech"));
}

/// Ogg Opus → 48 kHz samples, decoded by libopus's `opusdec` (Debian
/// `opus-tools`, installed by test.sh): a decoder independent of our encoder.
fn opusdec(ogg: &[u8]) -> Vec<i16> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("opusdec")
        .args(["--quiet", "--rate", "48000", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("opusdec (Debian: apt-get install opus-tools)");
    let mut stdin = child.stdin.take().unwrap();
    let input = ogg.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "opusdec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pcm_samples(&out.stdout)
}

#[test]
fn opus_decodes_with_libopus_to_the_length_of_the_wav() {
    let server = server();
    let wav = speak(&server, &json!({"input": TEXT, "response_format": "wav"}));
    assert_eq!(wav.status, 200);
    let wav_s = (wav.body.len() - 44) as f64 / 2.0 / f64::from(RATE);

    let a = speak(&server, &json!({"input": TEXT, "response_format": "opus"}));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(header(&a, "content-type"), "audio/opus");
    assert_eq!(&a.body[..4], b"OggS");
    // OpusHead states the voice's own rate as the input rate.
    assert_eq!(&a.body[28..36], b"OpusHead");
    assert_eq!(u32::from_le_bytes(a.body[40..44].try_into().unwrap()), RATE);
    let samples = opusdec(&a.body);
    let opus_s = samples.len() as f64 / 48000.0;
    assert!(
        (opus_s / wav_s - 1.0).abs() < 0.10,
        "opus {opus_s:.2} s vs wav {wav_s:.2} s"
    );
    assert!(rms(&samples) > 500.0, "silent (rms {:.0})", rms(&samples));
    // Far smaller than the PCM it carries (32 kb/s against 353 kb/s).
    assert!(a.body.len() * 5 < wav.body.len(), "{} bytes", a.body.len());

    // In SSE, the deltas put together are the same kind of stream.
    let a = speak(
        &server,
        &json!({"input": TEXT, "response_format": "opus", "stream_format": "sse"}),
    );
    assert_eq!(a.status, 200);
    let mut ogg = Vec::new();
    let mut deltas = 0;
    for event in sse_events(std::str::from_utf8(&a.body).unwrap()) {
        if event["type"] == "speech.audio.delta" {
            deltas += 1;
            ogg.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(event["audio"].as_str().unwrap())
                    .unwrap(),
            );
        }
    }
    // Headers and a page or more per sentence, as they are spoken.
    assert!(deltas >= 3, "{deltas} deltas");
    let sse = opusdec(&ogg);
    assert!(
        (sse.len() as f64 / 48000.0 / wav_s - 1.0).abs() < 0.10,
        "sse opus {:.2} s vs wav {wav_s:.2} s",
        sse.len() as f64 / 48000.0
    );
    assert!(rms(&sse) > 500.0, "sse: silent");
}

#[test]
fn speed_scales_duration_inversely() {
    let server = server();
    let len = |speed: f64| {
        let a = speak(
            &server,
            &json!({"input": TEXT, "response_format": "pcm", "speed": speed}),
        );
        assert_eq!(a.status, 200);
        secs(&pcm_samples(&a.body))
    };
    let (slow, normal, fast) = (len(0.5), len(1.0), len(2.0));
    // Not exactly 2x: VITS gives every phoneme at least one frame, so the
    // shortest sounds cannot shrink further at high speed.
    assert!(
        (1.4..2.6).contains(&(slow / normal)),
        "0.5x: {slow:.2} vs {normal:.2} s"
    );
    assert!(
        (1.4..2.6).contains(&(normal / fast)),
        "2x: {fast:.2} vs {normal:.2} s"
    );
    assert!(slow / fast > 2.4, "4x apart: {slow:.2} vs {fast:.2} s");
}

#[test]
fn first_chunk_arrives_before_synthesis_finishes() {
    let server = server();
    let input = [
        "This is the first sentence, and it is short.",
        "The second sentence follows it closely.",
        "A third one keeps the voice busy for a while longer.",
        "Then comes a fourth, which is also quite ordinary.",
        "The fifth sentence talks about nothing in particular.",
        "Finally, the sixth sentence ends this little speech.",
    ]
    .join(" ");
    let started = Instant::now();
    let mut resp = Server::client()
        .post(server.url("/v1/audio/speech"))
        .json(&json!({"input": input, "response_format": "pcm"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut buf = vec![0u8; 1 << 16];
    let n = resp.read(&mut buf).unwrap();
    let first = started.elapsed();
    assert!(n > 0);
    let mut rest = Vec::new();
    resp.read_to_end(&mut rest).unwrap();
    let total = started.elapsed();
    let all = n + rest.len();
    eprintln!("first chunk after {first:?} ({n} bytes), all {all} bytes after {total:?}");
    assert!(
        rest.len() > all / 2,
        "most audio should come after the first chunk"
    );
    assert!(
        first.as_secs_f64() < total.as_secs_f64() * 0.5,
        "first chunk at {first:?} of {total:?}: not streamed"
    );
}

#[test]
fn sse_sends_audio_deltas_then_done() {
    let server = server();
    let a = speak(
        &server,
        &json!({"model": "tts-1", "voice": "alloy", "input": TEXT,
                "response_format": "pcm", "stream_format": "sse"}),
    );
    assert_eq!(a.status, 200);
    assert!(header(&a, "content-type").starts_with("text/event-stream"));
    let events = sse_events(std::str::from_utf8(&a.body).unwrap());
    let (done, deltas) = events.split_last().expect("events");
    assert_eq!(done["type"], "speech.audio.done", "{done}");
    assert!(done["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(
        deltas.len() >= 3,
        "one delta per sentence at least: {}",
        deltas.len()
    );
    let mut pcm = Vec::new();
    for d in deltas {
        assert_eq!(d["type"], "speech.audio.delta");
        pcm.extend(
            base64::engine::general_purpose::STANDARD
                .decode(d["audio"].as_str().unwrap())
                .unwrap(),
        );
    }
    assert_plausible(&pcm_samples(&pcm), "sse");
}

#[test]
fn bad_inputs_are_400s_naming_the_param_and_the_server_keeps_serving() {
    let server = server();
    let cases = [
        (json!({"input": ""}), "input", ""),
        (json!({"input": "a".repeat(4097)}), "input", "4096"),
        (json!({"input": "hi", "speed": 0.1}), "speed", "0.25"),
        (json!({"input": "hi", "speed": 4.5}), "speed", "4.0"),
        (json!({"input": "hi", "voice": "robot"}), "voice", VOICE),
        (
            json!({"input": "hi", "response_format": "mp3"}),
            "response_format",
            "wav, pcm, flac, opus",
        ),
        (
            json!({"input": "hi", "response_format": "aac"}),
            "response_format",
            "patent",
        ),
        (
            json!({"input": "hi", "stream_format": "radio"}),
            "stream_format",
            "sse",
        ),
        (json!({"input": "hi", "model": "gpt-4"}), "model", VOICE),
    ];
    for (body, param, mentions) in cases {
        let (status, err) = server.post("/v1/audio/speech", &body);
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{body}: {message}");
    }
    let (status, _) = server.post_raw("/v1/audio/speech", "{not json");
    assert_eq!(status, 400);
    let (status, _) = server.get("/v1/audio/speech");
    assert_eq!(status, 405);
    // Still serving.
    let a = speak(&server, &json!({"input": "Still here.", "voice": "nova"}));
    assert_eq!(a.status, 200);
    assert_eq!(header(&a, "x-voice"), VOICE);
}

#[test]
fn concurrent_requests_do_not_garble_each_other() {
    let server = server();
    let short = "One short sentence.";
    let long = "A much longer sentence, which has several clauses, takes the voice \
        quite a bit more time to say than the short one does.";
    let pcm = |text: &str| {
        let a = speak(&server, &json!({"input": text, "response_format": "pcm"}));
        assert_eq!(a.status, 200);
        pcm_samples(&a.body)
    };
    let (short_alone, long_alone) = (secs(&pcm(short)), secs(&pcm(long)));
    let together: Vec<(bool, Vec<i16>)> = std::thread::scope(|s| {
        let handles: Vec<_> = [false, true, false, true]
            .into_iter()
            .map(|is_long| {
                let pcm = &pcm;
                s.spawn(move || (is_long, pcm(if is_long { long } else { short })))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (is_long, samples) in &together {
        let alone = if *is_long { long_alone } else { short_alone };
        let ratio = secs(samples) / alone;
        assert!(
            (0.8..1.25).contains(&ratio),
            "long={is_long}: {ratio:.2}x its solo length"
        );
        assert!(rms(samples) > 500.0, "silent");
    }
    assert!(
        long_alone > short_alone * 2.5,
        "{long_alone} vs {short_alone}"
    );
}
