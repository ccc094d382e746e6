//! The tokenizer carried in a GGUF file's metadata.

use anyhow::{anyhow, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

/// GGUF `tokenizer.ggml.token_type` value for control tokens (`<|im_end|>`…):
/// they steer the model and have no text.
const TOKEN_TYPE_CONTROL: u32 = 3;

/// An integer metadata value of any width. Probing with candle's `to_i32()`,
/// `to_u32()`… builds an error for every mismatch — with `RUST_BACKTRACE` set,
/// a captured backtrace each, and the token types are 49k values (an eager
/// `.or(v.to_u32().ok())` made that every token): loading took ~0.3–0.9 s
/// longer.
pub(crate) fn metadata_int(v: &gguf_file::Value) -> Option<i64> {
    use gguf_file::Value::*;
    Some(match *v {
        U8(x) => x.into(),
        I8(x) => x.into(),
        U16(x) => x.into(),
        I16(x) => x.into(),
        U32(x) => x.into(),
        I32(x) => x.into(),
        U64(x) => i64::try_from(x).ok()?,
        I64(x) => x,
        _ => return None,
    })
}

pub(crate) struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// The text of every token as raw bytes, decoded once at load so the
    /// per-token path is a slice lookup.
    token_bytes: Vec<Vec<u8>>,
}

impl GgufTokenizer {
    pub(crate) fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let mut tokenizer =
            Tokenizer::from_gguf(ct).map_err(|e| anyhow!("building the GGUF tokenizer: {e}"))?;
        let pre = ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("gpt2");
        // candle's builder maps unknown `pre` values (SmolLM's "smollm" among
        // them) to GPT-2's ByteLevel with a prefix space, which turns `system`
        // into `Ġsystem`. SmolLM-family tokenizers split digits individually
        // and add no prefix space (their tokenizer.json says so).
        if matches!(pre, "smollm" | "gpt2" | "default") {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])));
            tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        }

        let tokens = ct
            .metadata
            .get("tokenizer.ggml.tokens")
            .context("GGUF has no tokenizer.ggml.tokens")?
            .to_vec()?;
        let types = ct
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok());
        let unicode_to_byte = byte_level_inverse();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                let text = t.to_string().map_err(|e| anyhow!("token {id}: {e}"))?;
                let ty = types
                    .and_then(|ty| ty.get(id))
                    .and_then(metadata_int)
                    .and_then(|x| u32::try_from(x).ok());
                if ty == Some(TOKEN_TYPE_CONTROL) {
                    return Ok(Vec::new());
                }
                // Byte-level BPE stores bytes as printable code points; a
                // token that is not in that alphabet is literal text.
                let bytes: Option<Vec<u8>> = text
                    .chars()
                    .map(|c| unicode_to_byte.get(c as usize).copied().flatten())
                    .collect();
                Ok(bytes.unwrap_or_else(|| text.as_bytes().to_vec()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tokenizer,
            token_bytes,
        })
    }

    /// Special tokens in the text are parsed; no BOS is added.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub(crate) fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes.get(id as usize).map(Vec::as_slice)
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }
}

/// GPT-2's byte-level alphabet, reversed: code point → byte.
fn byte_level_inverse() -> Vec<Option<u8>> {
    let mut inverse = vec![None; 324];
    let mut next = 256usize;
    for b in 0u16..=255 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        let cp = if printable {
            b as usize
        } else {
            next += 1;
            next - 1
        };
        inverse[cp] = Some(b as u8);
    }
    inverse
}

#[cfg(test)]
mod tests {
    use super::byte_level_inverse;

    #[test]
    fn byte_level_alphabet_round_trips() {
        let inv = byte_level_inverse();
        assert_eq!(inv['Ġ' as usize], Some(b' '));
        assert_eq!(inv['Ċ' as usize], Some(b'\n'));
        assert_eq!(inv['a' as usize], Some(b'a'));
        assert_eq!(inv.iter().filter(|b| b.is_some()).count(), 256);
    }
}
