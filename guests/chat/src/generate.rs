//! The generation loop: sample, detokenise, stop, emit.
//!
//! It is written against two small traits — [`Model`] (one `tokens`
//! compute) and [`Sink`] (where text deltas go) — so that the same loop
//! serves streamed and whole responses, and so it can be tested off-wasm with
//! a scripted model. That the streamed deltas concatenate to exactly the
//! non-streamed content follows from both using this one function.
//!
//! Log-probabilities (when the request asked for them) travel with the text:
//! each sampled token's entry goes to the sink with the first delta that
//! completes the token's text, so streamed entries concatenate to the
//! non-streamed ones. The rules at the edges:
//! - A token whose bytes end inside a UTF-8 character waits with it: its
//!   entry goes with the delta that delivers the completed character.
//! - Text held back as a possible stop-sequence prefix holds back its tokens'
//!   entries too.
//! - When a stop sequence cuts the text, tokens wholly inside the cut text
//!   (or after it) are not listed; a token straddling the cut is listed with
//!   `token` and `bytes` trimmed to the part that was output, with its own
//!   logprob. Such an entry may arrive in a last delta with empty text when
//!   its visible part was already sent.
//! - End-of-sequence tokens are not listed (their text is not output).
//! - When generation ends without a stop sequence, every remaining entry is
//!   sent with the final delta, including a token whose unfinished character
//!   was dropped.

use std::collections::VecDeque;

use crate::constraint::Constraint;
use crate::logprobs::{StepLogprobs, TokenLogprob};
use crate::stop::StopMatcher;
use crate::utf8::Utf8Decoder;
use sandpiper_grammar::Vocab;
use sandpiper_guest_sdk::http::Disconnected;
use sandpiper_guest_sdk::nn::{ErrorCode, NnError};
use sandpiper_guest_sdk::ApiError;

/// What one `tokens` compute returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// The sampled token; not yet in the sequence.
    pub token: i32,
    /// Its text as raw bytes (may be part of a UTF-8 character, or empty).
    pub bytes: Vec<u8>,
    /// Present when the sampling parameters asked for log-probabilities.
    pub logprobs: Option<StepLogprobs>,
}

/// A sequence that can be extended and sampled from.
pub trait Model {
    /// Appends `tokens` to the sequence, runs the model and samples the next
    /// token (which is not appended).
    fn step(&mut self, tokens: &[i32]) -> Result<Step, NnError>;

    /// Samples the last position again, among the tokens `mask` allows
    /// (only needed for constrained generation).
    fn resample(&mut self, _mask: &[u8]) -> Result<Step, NnError> {
        Err(NnError::new(
            ErrorCode::UnsupportedOperation,
            "this model cannot resample",
        ))
    }

    /// The model's vocabulary, for masks (only needed for constrained
    /// generation).
    fn vocab(&mut self) -> Result<&Vocab, NnError> {
        Err(NnError::new(
            ErrorCode::UnsupportedOperation,
            "this model has no vocabulary",
        ))
    }
}

/// Where generated text goes, as soon as it is final.
pub trait Sink {
    /// Receives a piece of output and the log-probabilities of the tokens
    /// it completes (empty unless asked for). `delta` is non-empty except in
    /// a last call that only carries entries. `Err` means the client is gone
    /// and generation must stop.
    fn text(&mut self, delta: &str, logprobs: &[TokenLogprob]) -> Result<(), Disconnected>;
}

/// Collects the whole text (log-probabilities are dropped).
impl Sink for String {
    fn text(&mut self, delta: &str, _: &[TokenLogprob]) -> Result<(), Disconnected> {
        self.push_str(delta);
        Ok(())
    }
}

/// Collects the whole completion with its log-probabilities (the
/// non-streaming response).
#[derive(Debug, Default)]
pub struct Collected {
    pub content: String,
    pub logprobs: Vec<TokenLogprob>,
}

impl Sink for Collected {
    fn text(&mut self, delta: &str, logprobs: &[TokenLogprob]) -> Result<(), Disconnected> {
        self.content.push_str(delta);
        self.logprobs.extend_from_slice(logprobs);
        Ok(())
    }
}

/// A token's entry and where its text lies in the decoded output (byte
/// offsets into the text before stop sequences are cut).
struct Pending {
    start: usize,
    end: usize,
    entry: TokenLogprob,
}

/// Lines log-probability entries up with the text that is output.
#[derive(Default)]
struct Aligner {
    /// Decoded text so far (to trim a token a stop sequence cuts).
    decoded: String,
    /// Bytes of `decoded` already given to the sink.
    emitted: usize,
    /// Tokens whose text is complete, in order.
    ready: VecDeque<Pending>,
    /// Tokens whose last character is not complete yet, and where the first
    /// of them started.
    waiting: Vec<TokenLogprob>,
    waiting_start: usize,
}

impl Aligner {
    /// Records one token's decoded `text`; `complete` is false while the
    /// decoder still holds part of a character.
    fn push(&mut self, entry: Option<TokenLogprob>, text: &str, complete: bool) {
        if self.waiting.is_empty() {
            self.waiting_start = self.decoded.len();
        }
        self.decoded.push_str(text);
        self.waiting.extend(entry);
        if complete {
            let (start, end) = (self.waiting_start, self.decoded.len());
            self.ready.extend(
                self.waiting
                    .drain(..)
                    .map(|entry| Pending { start, end, entry }),
            );
        }
    }

    /// `len` more bytes are output: the entries whose text is now complete.
    fn emit(&mut self, len: usize) -> Vec<TokenLogprob> {
        self.emitted += len;
        let mut out = Vec::new();
        while self.ready.front().is_some_and(|p| p.end <= self.emitted) {
            out.extend(self.ready.pop_front().map(|p| p.entry));
        }
        out
    }

    /// A stop sequence cut the text after `len` more output bytes: entries
    /// that show any output text, trimmed to it.
    fn cut(&mut self, len: usize) -> Vec<TokenLogprob> {
        self.emitted += len;
        let cut = self.emitted;
        let mut out = Vec::new();
        for p in self.ready.drain(..) {
            if p.start >= cut {
                break;
            }
            let mut entry = p.entry;
            if p.end > cut {
                entry.token = self.decoded[p.start..cut].to_string();
                entry.bytes = entry.token.as_bytes().to_vec();
            }
            out.push(entry);
        }
        // Tokens still waiting for a character's last bytes all straddle the
        // cut (that character is after it): the first one, if it started
        // before the cut, is listed with the output text since it started.
        let waiting = std::mem::take(&mut self.waiting);
        if self.waiting_start < cut {
            if let Some(mut entry) = waiting.into_iter().next() {
                entry.token = self.decoded[self.waiting_start..cut].to_string();
                entry.bytes = entry.token.as_bytes().to_vec();
                out.push(entry);
            }
        }
        out
    }

    /// The end without a stop sequence: everything left.
    fn finish(&mut self) -> Vec<TokenLogprob> {
        let mut out: Vec<TokenLogprob> = self.ready.drain(..).map(|p| p.entry).collect();
        out.append(&mut self.waiting);
        out
    }
}

/// OpenAI's `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The model called tools (decided from its output, after generation).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// How generation may end besides the model's own choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most tokens to sample (≥ 1); see [`token_budget`].
    pub max_new_tokens: u64,
    /// Sampling one of these ends the completion; its text is not output.
    pub eos_token_ids: Vec<i32>,
    /// Stop sequences (see [`crate::stop`]).
    pub stop: Vec<String>,
}

/// How a completed generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub finish_reason: FinishReason,
    /// Tokens the model sampled for this completion, *including* a final
    /// end-of-sequence token and the token that completed a stop sequence,
    /// although neither's text is returned. This is what llama.cpp's server
    /// reports and what the sequence actually cost to produce.
    pub completion_tokens: u64,
}

/// Why generation ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenError {
    /// The sink reported that the client went away.
    Disconnected { completion_tokens: u64 },
    /// A compute failed before anything could be finished.
    Model {
        error: NnError,
        completion_tokens: u64,
    },
}

/// Runs the loop: prompt first, then each sampled token fed back, until an
/// end-of-sequence token, a stop sequence, the token limit, or the end of
/// what `constraint` allows.
///
/// Text reaches `sink` only when final: complete UTF-8 characters that are
/// not (possibly) part of a stop sequence. With a `constraint`, a sampled
/// token it refuses is resampled among the tokens it allows.
pub fn generate(
    model: &mut dyn Model,
    prompt: &[i32],
    limits: &Limits,
    mut constraint: Option<&mut Constraint>,
    sink: &mut dyn Sink,
) -> Result<Outcome, GenError> {
    let mut decoder = Utf8Decoder::new();
    let mut stops = StopMatcher::new(&limits.stop);
    let mut aligner = Aligner::default();
    let mut input = prompt.to_vec();
    let mut sampled: u64 = 0;
    let emit = |sink: &mut dyn Sink, text: &str, logprobs: &[TokenLogprob], sampled: u64| {
        if text.is_empty() && logprobs.is_empty() {
            return Ok(());
        }
        sink.text(text, logprobs)
            .map_err(|Disconnected| GenError::Disconnected {
                completion_tokens: sampled,
            })
    };

    let finish_reason = loop {
        if sampled >= limits.max_new_tokens {
            break FinishReason::Length;
        }
        let step = match model.step(&input) {
            Ok(step) => step,
            // The host's sequence is full earlier than metadata said: end
            // the completion like a context-length stop, keeping the text.
            Err(e) if e.code == ErrorCode::TooLarge && sampled > 0 => break FinishReason::Length,
            Err(error) => {
                return Err(GenError::Model {
                    error,
                    completion_tokens: sampled,
                })
            }
        };
        let step = match constraint.as_deref_mut() {
            None => step,
            Some(c) => constrain(model, c, step, &limits.eos_token_ids).map_err(|error| {
                GenError::Model {
                    error,
                    completion_tokens: sampled,
                }
            })?,
        };
        sampled += 1;
        if limits.eos_token_ids.contains(&step.token) {
            break FinishReason::Stop;
        }
        let text = decoder.push(&step.bytes);
        let entry = step.logprobs.map(|lp| TokenLogprob::new(&step.bytes, lp));
        aligner.push(entry, &text, !decoder.has_pending());
        let pushed = stops.push(&text);
        let entries = if pushed.stopped {
            aligner.cut(pushed.emit.len())
        } else if pushed.emit.is_empty() {
            Vec::new()
        } else {
            aligner.emit(pushed.emit.len())
        };
        emit(sink, &pushed.emit, &entries, sampled)?;
        if pushed.stopped {
            return Ok(Outcome {
                finish_reason: FinishReason::Stop,
                completion_tokens: sampled,
            });
        }
        if constraint.as_deref().is_some_and(Constraint::finished) {
            break FinishReason::Stop;
        }
        input.clear();
        input.push(step.token);
    };

    // The model ended without a stop sequence: text held back as a possible
    // stop prefix is output after all. (A character left incomplete in the
    // decoder is dropped; see `Utf8Decoder`.)
    emit(sink, &stops.finish(), &aligner.finish(), sampled)?;
    Ok(Outcome {
        finish_reason,
        completion_tokens: sampled,
    })
}

/// `step` if `constraint` takes it, else a resample among the tokens it
/// allows (which it must then take).
fn constrain(
    model: &mut dyn Model,
    constraint: &mut Constraint,
    step: Step,
    eos_token_ids: &[i32],
) -> Result<Step, NnError> {
    if constraint.accept(&step.bytes, eos_token_ids.contains(&step.token)) {
        return Ok(step);
    }
    let end_ids: Vec<u32> = eos_token_ids.iter().map(|&id| id as u32).collect();
    let mask = constraint.mask(model.vocab()?, &end_ids);
    let step = model.resample(&mask)?;
    if constraint.accept(&step.bytes, eos_token_ids.contains(&step.token)) {
        Ok(step)
    } else {
        Err(NnError::protocol(format!(
            "the backend resampled token {} outside the mask",
            step.token
        )))
    }
}

/// How many tokens may be generated for a prompt, or the OpenAI
/// `context_length_exceeded` error. Prompt and completion share the
/// context: `prompt + max_tokens` must fit, and without `max_tokens` the
/// completion may fill whatever the prompt left. `param` is what the prompt
/// came from: `messages` for chat, `prompt` or `prompt[i]` for a text
/// completion; the message names it without the index.
pub fn token_budget(
    prompt_tokens: u64,
    context_length: u64,
    max_tokens: Option<u64>,
    param: &str,
) -> Result<u64, ApiError> {
    let what = param.split('[').next().unwrap_or(param);
    let exceeded = |message: String| {
        ApiError::invalid_request(message)
            .with_param(param)
            .with_code("context_length_exceeded")
    };
    if prompt_tokens >= context_length {
        return Err(exceeded(format!(
            "This model's maximum context length is {context_length} tokens. However, your {what} resulted in {prompt_tokens} tokens, which leaves no room for a completion. Please reduce the length of the {what}."
        )));
    }
    match max_tokens {
        None => Ok(context_length - prompt_tokens),
        Some(max) if prompt_tokens.saturating_add(max) > context_length => Err(exceeded(format!(
            "This model's maximum context length is {context_length} tokens. However, you requested {} tokens ({prompt_tokens} in the {what}, {max} in the completion). Please reduce the length of the {what} or completion.",
            prompt_tokens.saturating_add(max)
        ))),
        Some(max) => Ok(max),
    }
}

/// A [`Model`] for tests: plays back text pieces, each with a
/// log-probability, then EOS (token 2).
#[cfg(test)]
pub(crate) struct Pieces(pub Vec<&'static str>);

#[cfg(test)]
impl Model for Pieces {
    fn step(&mut self, _: &[i32]) -> Result<Step, NnError> {
        if self.0.is_empty() {
            return Ok(Step {
                token: 2,
                ..Default::default()
            });
        }
        let bytes = self.0.remove(0).as_bytes().to_vec();
        Ok(Step {
            token: 50,
            logprobs: Some(StepLogprobs {
                logprob: -(bytes.len() as f64),
                top: vec![crate::logprobs::Alternative {
                    id: 9,
                    logprob: -0.1,
                    bytes: b"x".to_vec(),
                }],
            }),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays back a fixed list of (token, bytes) and records every input.
    struct Script {
        steps: Vec<Result<Step, NnError>>,
        inputs: Vec<Vec<i32>>,
    }

    impl Script {
        fn new(pieces: &[(i32, &[u8])]) -> Self {
            Self {
                steps: pieces
                    .iter()
                    .map(|(t, b)| {
                        Ok(Step {
                            token: *t,
                            bytes: b.to_vec(),
                            logprobs: Some(StepLogprobs {
                                logprob: -(*t as f64),
                                top: Vec::new(),
                            }),
                        })
                    })
                    .collect(),
                inputs: Vec::new(),
            }
        }

        fn text(pieces: &[&str]) -> Self {
            let mut s = Self::new(&[]);
            for (i, p) in pieces.iter().enumerate() {
                s.steps.push(Ok(Step {
                    token: 100 + i as i32,
                    bytes: p.as_bytes().to_vec(),
                    logprobs: Some(StepLogprobs {
                        logprob: -(i as f64),
                        top: Vec::new(),
                    }),
                }));
            }
            s
        }
    }

    impl Model for Script {
        fn step(&mut self, tokens: &[i32]) -> Result<Step, NnError> {
            self.inputs.push(tokens.to_vec());
            if self.steps.is_empty() {
                return Err(NnError::new(ErrorCode::RuntimeError, "script ran out"));
            }
            self.steps.remove(0)
        }
    }

    /// A model over a tiny vocabulary that prefers tokens in a fixed order
    /// and resamples greedily within a mask, as the backend does.
    struct Greedy {
        vocab: Vocab,
        /// Token ids, most preferred first.
        preference: Vec<u32>,
        resamples: usize,
    }

    impl Greedy {
        fn new(tokens: &[&str], preference: &[u32]) -> Self {
            let mut bytes = Vec::new();
            let mut offsets = vec![0];
            for t in tokens {
                bytes.extend_from_slice(t.as_bytes());
                offsets.push(bytes.len() as u32);
            }
            Self {
                vocab: Vocab::new(bytes, offsets).unwrap(),
                preference: preference.to_vec(),
                resamples: 0,
            }
        }

        fn step_for(&self, id: u32) -> Step {
            Step {
                token: id as i32,
                bytes: self.vocab.token(id).to_vec(),
                logprobs: None,
            }
        }
    }

    impl Model for Greedy {
        fn step(&mut self, _: &[i32]) -> Result<Step, NnError> {
            Ok(self.step_for(self.preference[0]))
        }

        fn resample(&mut self, mask: &[u8]) -> Result<Step, NnError> {
            self.resamples += 1;
            let id = *self
                .preference
                .iter()
                .find(|&&id| mask[id as usize / 8] & (1 << (id % 8)) != 0)
                .ok_or_else(|| NnError::new(ErrorCode::InvalidArgument, "empty mask"))?;
            Ok(self.step_for(id))
        }

        fn vocab(&mut self) -> Result<&Vocab, NnError> {
            Ok(&self.vocab)
        }
    }

    #[test]
    fn constrained_output_is_json_whatever_the_model_prefers() {
        use crate::constraint::{Constraint, ResponseFormat};
        use crate::tools::Tools;
        // Ids: 0 is EOS; the model always prefers "Sure" then "!".
        let tokens = ["", "Sure", "!", "{", "\"a\"", ":", " 1", "}", "}\n"];
        let mut m = Greedy::new(&tokens, &[1, 2, 4, 5, 6, 7, 8, 3, 0]);
        let mut c = Constraint::for_request(&Tools::default(), &ResponseFormat::JsonObject)
            .unwrap()
            .unwrap();
        let mut out = String::new();
        let o = generate(&mut m, &[1], &limits(20, &[]), Some(&mut c), &mut out).unwrap();
        // "Sure" is refused every time; the best allowed token is taken;
        // "}\n" would leave the object and is refused.
        assert_eq!(out, "{\"a\":\"a\"}");
        assert_eq!(
            o.finish_reason,
            FinishReason::Stop,
            "stops when the object closes"
        );
        assert_eq!(o.completion_tokens, 5);
        assert_eq!(m.resamples, 5);
    }

    /// Records each delta, optionally failing after `fail_after` deltas.
    #[derive(Default)]
    struct Deltas {
        parts: Vec<String>,
        tokens: Vec<Vec<String>>,
        fail_after: Option<usize>,
    }

    impl Sink for Deltas {
        fn text(&mut self, delta: &str, logprobs: &[TokenLogprob]) -> Result<(), Disconnected> {
            if self.fail_after == Some(self.parts.len()) {
                return Err(Disconnected);
            }
            assert!(!delta.is_empty() || !logprobs.is_empty());
            self.parts.push(delta.to_string());
            self.tokens
                .push(logprobs.iter().map(|e| e.token.clone()).collect());
            Ok(())
        }
    }

    fn logprob_tokens(c: &Collected) -> String {
        c.logprobs.iter().map(|e| e.token.as_str()).collect()
    }

    #[test]
    fn logprobs_follow_the_text() {
        let mut m = Script::text(&["Hel", "lo", " wor", "ld"]);
        let mut d = Deltas::default();
        generate(&mut m, &[1], &limits(4, &[]), None, &mut d).unwrap();
        assert_eq!(d.parts, vec!["Hel", "lo", " wor", "ld"]);
        assert_eq!(
            d.tokens,
            vec![vec!["Hel"], vec!["lo"], vec![" wor"], vec!["ld"]]
        );

        // Held back as a possible stop prefix, then released together.
        let mut m = Script::text(&["a", "E", "N", "x", "y"]);
        let mut d = Deltas::default();
        generate(&mut m, &[1], &limits(5, &["END"]), None, &mut d).unwrap();
        assert_eq!(d.parts, vec!["a", "ENx", "y"]);
        assert_eq!(d.tokens, vec![vec!["a"], vec!["E", "N", "x"], vec!["y"]]);
    }

    #[test]
    fn logprobs_of_cut_text_are_dropped_or_trimmed() {
        // "ld\n" straddles the "\n\n" stop: listed as "ld"; "\nBye" is cut.
        let mut m = Script::text(&["Hello", " wor", "ld\n", "\nBye", "x"]);
        let mut c = Collected::default();
        generate(&mut m, &[1], &limits(100, &["\n\n"]), None, &mut c).unwrap();
        assert_eq!(c.content, "Hello world");
        assert_eq!(logprob_tokens(&c), c.content);
        assert_eq!(c.logprobs[2].bytes, b"ld");
        assert_eq!(c.logprobs[2].logprob, -2.0);

        let mut m = Script::text(&["Hello", " wor", "ld\n", "\nBye", "x"]);
        let mut d = Deltas::default();
        generate(&mut m, &[1], &limits(100, &["\n\n"]), None, &mut d).unwrap();
        assert_eq!(d.parts, vec!["Hello", " wor", "ld", ""]);
        assert_eq!(d.tokens.concat(), vec!["Hello", " wor", "ld"]);

        // A stop inside one token.
        let mut m = Script::text(&["ab", "cENDd"]);
        let mut c = Collected::default();
        generate(&mut m, &[1], &limits(100, &["END"]), None, &mut c).unwrap();
        assert_eq!(
            (c.content.as_str(), logprob_tokens(&c).as_str()),
            ("abc", "abc")
        );
        // A token wholly after the cut is not listed.
        let mut m = Script::text(&["ab", "E", "ND", "zz"]);
        let mut c = Collected::default();
        generate(&mut m, &[1], &limits(100, &["END"]), None, &mut c).unwrap();
        assert_eq!(c.logprobs.len(), 1);
    }

    #[test]
    fn stop_before_an_unfinished_character() {
        let crab = "🦀".as_bytes();
        let first: Vec<u8> = [&b"abEND"[..], &crab[..1]].concat();
        let mut m = Script::new(&[(10, &first), (11, &crab[1..])]);
        let mut c = Collected::default();
        generate(&mut m, &[1], &limits(100, &["END"]), None, &mut c).unwrap();
        assert_eq!(c.content, "ab");
        assert_eq!(logprob_tokens(&c), "ab");
        assert_eq!(c.logprobs[0].logprob, -10.0);
    }

    #[test]
    fn logprobs_wait_for_split_characters() {
        let crab = "🦀".as_bytes();
        let mut m = Script::new(&[(10, &crab[..1]), (11, &crab[1..]), (12, b"!"), (EOS, b"")]);
        let mut d = Deltas::default();
        generate(&mut m, &[1], &limits(100, &[]), None, &mut d).unwrap();
        assert_eq!(d.parts, vec!["🦀", "!"]);
        assert_eq!(d.tokens[0].len(), 2);
        assert_eq!(d.tokens[1], vec!["!"]);

        // At max_tokens, a token of a dropped half character is still listed.
        let mut m = Script::new(&[(10, b"a"), (11, &crab[..2])]);
        let mut c = Collected::default();
        generate(&mut m, &[1], &limits(2, &[]), None, &mut c).unwrap();
        assert_eq!(c.content, "a");
        assert_eq!(c.logprobs.len(), 2);
        assert_eq!(c.logprobs[1].bytes, &crab[..2]);
    }

    #[test]
    fn streamed_logprobs_equal_whole_logprobs() {
        let pieces = [
            "The", " capital", " is", " Par", "is", ".", "\n", "\n", "More",
        ];
        for stop in [
            &[][..],
            &["\n\n"][..],
            &["is P"][..],
            &["xyz", "."][..],
            &["More"][..],
        ] {
            let mut whole = Collected::default();
            generate(
                &mut Script::text(&pieces),
                &[1],
                &limits(9, stop),
                None,
                &mut whole,
            )
            .unwrap();
            let mut d = Deltas::default();
            generate(
                &mut Script::text(&pieces),
                &[1],
                &limits(9, stop),
                None,
                &mut d,
            )
            .unwrap();
            let whole_tokens: Vec<String> =
                whole.logprobs.iter().map(|e| e.token.clone()).collect();
            assert_eq!(d.tokens.concat(), whole_tokens, "stops {stop:?}");
            assert_eq!(logprob_tokens(&whole), whole.content, "stops {stop:?}");
        }
    }

    const EOS: i32 = 2;

    fn limits(max: u64, stop: &[&str]) -> Limits {
        Limits {
            max_new_tokens: max,
            eos_token_ids: vec![EOS],
            stop: stop.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn stops_at_eos_and_feeds_tokens_back() {
        let mut m = Script::new(&[(10, b"Par"), (11, b"is"), (EOS, b"")]);
        let mut out = String::new();
        let o = generate(&mut m, &[1, 5, 6], &limits(100, &[]), None, &mut out).unwrap();
        assert_eq!(out, "Paris");
        assert_eq!(o.finish_reason, FinishReason::Stop);
        assert_eq!(o.completion_tokens, 3, "the EOS token counts");
        assert_eq!(m.inputs, vec![vec![1, 5, 6], vec![10], vec![11]]);
    }

    #[test]
    fn max_tokens_gives_length() {
        let mut m = Script::text(&["a", "b", "c", "d"]);
        let mut out = String::new();
        let o = generate(&mut m, &[1], &limits(2, &[]), None, &mut out).unwrap();
        assert_eq!(
            (out.as_str(), o.finish_reason),
            ("ab", FinishReason::Length)
        );
        assert_eq!(o.completion_tokens, 2);
        assert_eq!(m.inputs.len(), 2, "no compute after the limit");
    }

    #[test]
    fn stop_sequence_across_tokens_is_cut() {
        let mut m = Script::text(&["Hello", " wor", "ld\n", "\nBye", "x"]);
        let mut d = Deltas::default();
        let o = generate(&mut m, &[1], &limits(100, &["\n\n"]), None, &mut d).unwrap();
        assert_eq!(d.parts.concat(), "Hello world");
        assert_eq!(o.finish_reason, FinishReason::Stop);
        assert_eq!(o.completion_tokens, 4);
    }

    #[test]
    fn held_back_prefix_is_flushed_at_length() {
        let mut m = Script::text(&["abc", "EN"]);
        let mut d = Deltas::default();
        let o = generate(&mut m, &[1], &limits(2, &["END"]), None, &mut d).unwrap();
        assert_eq!(d.parts, vec!["abc", "EN"]);
        assert_eq!(o.finish_reason, FinishReason::Length);
    }

    #[test]
    fn split_utf8_is_held_back() {
        let crab = "🦀".as_bytes();
        let mut m = Script::new(&[
            (10, &crab[..1]),
            (11, &crab[1..3]),
            (12, &crab[3..]),
            (13, b"!"),
            (EOS, b""),
        ]);
        let mut d = Deltas::default();
        generate(&mut m, &[1], &limits(100, &[]), None, &mut d).unwrap();
        assert_eq!(d.parts, vec!["🦀", "!"]);
    }

    #[test]
    fn unfinished_char_at_the_end_is_dropped() {
        let mut m = Script::new(&[(10, b"a\xf0\x9f"), (EOS, b"")]);
        let mut out = String::new();
        generate(&mut m, &[1], &limits(100, &[]), None, &mut out).unwrap();
        assert_eq!(out, "a");
    }

    #[test]
    fn streamed_deltas_equal_whole_output() {
        let pieces = [
            "The", " capital", " is", " Par", "is", ".", "\n", "\n", "More",
        ];
        for stop in [&[][..], &["\n\n"][..], &["is P"][..], &["xyz", "."][..]] {
            let mut whole = String::new();
            let a = generate(
                &mut Script::text(&pieces),
                &[1],
                &limits(20, stop),
                None,
                &mut whole,
            );
            let mut d = Deltas::default();
            let b = generate(
                &mut Script::text(&pieces),
                &[1],
                &limits(20, stop),
                None,
                &mut d,
            );
            assert_eq!(d.parts.concat(), whole, "stops {stop:?}");
            assert_eq!(a.map(|o| o.finish_reason), b.map(|o| o.finish_reason));
        }
    }

    #[test]
    fn disconnect_stops_generation() {
        let mut m = Script::text(&["a", "b", "c", "d"]);
        let mut d = Deltas {
            fail_after: Some(1),
            ..Default::default()
        };
        let err = generate(&mut m, &[1], &limits(100, &[]), None, &mut d).unwrap_err();
        assert_eq!(
            err,
            GenError::Disconnected {
                completion_tokens: 2
            }
        );
        assert_eq!(m.inputs.len(), 2, "no compute after the client left");
    }

    #[test]
    fn model_error_is_reported() {
        let mut m = Script::text(&[]);
        let err = generate(&mut m, &[1], &limits(5, &[]), None, &mut String::new()).unwrap_err();
        assert!(matches!(
            err,
            GenError::Model {
                completion_tokens: 0,
                ..
            }
        ));
    }

    #[test]
    fn full_context_mid_generation_is_length() {
        let mut m = Script::text(&["a"]);
        m.steps
            .push(Err(NnError::new(ErrorCode::TooLarge, "context full")));
        let mut out = String::new();
        let o = generate(&mut m, &[1], &limits(100, &[]), None, &mut out).unwrap();
        assert_eq!((out.as_str(), o.finish_reason), ("a", FinishReason::Length));
        assert_eq!(o.completion_tokens, 1);
    }

    #[test]
    fn budget_checks_context() {
        assert_eq!(token_budget(10, 100, None, "messages").unwrap(), 90);
        assert_eq!(token_budget(10, 100, Some(90), "messages").unwrap(), 90);
        assert_eq!(token_budget(10, 100, Some(5), "messages").unwrap(), 5);
        let e = token_budget(10, 100, Some(91), "messages").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert!(e.message.contains("100") && e.message.contains("101"));
        assert!(e.message.contains("in the messages"), "{}", e.message);
        let e = token_budget(100, 100, None, "messages").unwrap_err();
        assert!(e.message.contains("100 tokens"));
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert!(token_budget(5, 100, Some(u64::MAX), "messages").is_err());
    }

    #[test]
    fn budget_errors_name_the_prompt() {
        for (prompt, max) in [(100, None), (95, Some(10))] {
            let e = token_budget(prompt, 100, max, "prompt[2]").unwrap_err();
            assert_eq!(e.param.as_deref(), Some("prompt[2]"));
            assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
            assert!(!e.message.contains("messages"), "{}", e.message);
            assert!(!e.message.contains("prompt[2]"), "{}", e.message);
            assert!(e.message.contains("the prompt"), "{}", e.message);
        }
    }
}
