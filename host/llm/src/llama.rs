//! The llama architecture on the native kernels ([`crate::kernels`]).
//!
//! A plain llama decoder as candle's `quantized_llama` runs it (and with the
//! same numerics, up to float summation order): token embedding, per layer
//! RMSNorm → q/k/v → RoPE (interleaved pairs, GGUF's llama convention) →
//! causal grouped-query attention → output projection → residual, RMSNorm →
//! SiLU-gated MLP → residual; final RMSNorm and the output head (or the tied
//! embedding). Activations are plain f32 buffers, preallocated per sequence;
//! every matmul quantizes its input once to 8-bit blocks and runs the integer
//! kernels, rows split across the worker pool.
//!
//! Only what this covers loads ([`Llama::from_gguf`] says why not otherwise):
//! `general.architecture = llama`, no mixture of experts, RoPE over the whole
//! head, Q4_1/Q8_0 matrices and an embedding in Q4_1, Q8_0 or F32. Anything
//! else (other ggml types, other architectures) runs on candle's
//! `quantized_llama` instead (see [`crate::Model::load`]).

use std::io::{Read, Seek};
use std::ops::Range;

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;

use crate::kernels::{self, F16Buf, MatJob, Out, QActs, QMatrix, WeightType};

#[derive(Debug, Clone)]
pub struct Config {
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub eps: f32,
    pub rope_base: f32,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

enum Embedding {
    Quantized(QMatrix),
    F32 { data: Vec<f32>, dim: usize },
}

pub struct Llama {
    cfg: Config,
    embd: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None`: tied to the (quantized) embedding.
    output: Option<QMatrix>,
    /// RoPE frequency of each pair of a head, as candle computes it (f32).
    inv_freq: Vec<f32>,
}

fn weight_type(name: &str, dtype: GgmlDType) -> Result<WeightType> {
    Ok(match dtype {
        GgmlDType::Q4_1 => WeightType::Q4_1,
        GgmlDType::Q8_0 => WeightType::Q8_0,
        other => bail!("{name} is {other:?}; the native kernels handle Q4_1 and Q8_0"),
    })
}

impl Llama {
    /// Loads the weights, or says why this file needs candle's implementation.
    pub fn from_gguf<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R) -> Result<Self> {
        let md = |k: &str| {
            ct.metadata
                .get(k)
                .with_context(|| format!("no {k} in metadata"))
        };
        let u = |k: &str| -> Result<usize> { Ok(md(k)?.to_u32()? as usize) };
        let arch = md("general.architecture")?.to_string()?.clone();
        if arch != "llama" {
            bail!("architecture {arch:?} is not plain llama");
        }
        if ct
            .metadata
            .get("llama.expert_count")
            .is_some_and(|v| v.to_u32().is_ok_and(|n| n > 1))
        {
            bail!("mixture-of-experts models are not supported");
        }
        let dim = u("llama.embedding_length")?;
        let n_heads = u("llama.attention.head_count")?;
        let n_kv_heads = u("llama.attention.head_count_kv")?;
        let head_dim = dim / n_heads;
        let rope_dim = u("llama.rope.dimension_count")?;
        if rope_dim != head_dim || head_dim % 2 != 0 || n_heads % n_kv_heads != 0 {
            bail!("unsupported attention shape (heads {n_heads}/{n_kv_heads}, head {head_dim}, rope {rope_dim})");
        }
        let cfg = Config {
            dim,
            n_layers: u("llama.block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: u("llama.feed_forward_length")?,
            eps: md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?,
            rope_base: ct
                .metadata
                .get("llama.rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10000.0),
        };
        // Check every matrix type before reading any data.
        for (name, info) in &ct.tensor_infos {
            if name.starts_with("blk.") && name.ends_with(".weight") && info.shape.rank() == 2 {
                weight_type(name, info.ggml_dtype)?;
            }
        }
        let dev = Device::Cpu;
        let mut matrix = |name: &str| -> Result<QMatrix> {
            let qt = ct.tensor(reader, name, &dev)?;
            let ty = weight_type(name, qt.dtype())?;
            let (rows, cols) = qt.shape().dims2()?;
            QMatrix::from_ggml(ty, rows, cols, &qt.data()?).with_context(|| name.to_string())
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: Vec::new(),
                wq: matrix(&format!("{p}.attn_q.weight"))?,
                wk: matrix(&format!("{p}.attn_k.weight"))?,
                wv: matrix(&format!("{p}.attn_v.weight"))?,
                wo: matrix(&format!("{p}.attn_output.weight"))?,
                ffn_norm: Vec::new(),
                gate: matrix(&format!("{p}.ffn_gate.weight"))?,
                up: matrix(&format!("{p}.ffn_up.weight"))?,
                down: matrix(&format!("{p}.ffn_down.weight"))?,
            });
        }
        let output = if ct.tensor_infos.contains_key("output.weight") {
            Some(matrix("output.weight")?)
        } else {
            None
        };
        let mut vector = |name: &str| -> Result<Vec<f32>> {
            let qt = ct.tensor(reader, name, &dev)?;
            Ok(qt.dequantize(&dev)?.flatten_all()?.to_vec1::<f32>()?)
        };
        for (i, layer) in layers.iter_mut().enumerate() {
            layer.attn_norm = vector(&format!("blk.{i}.attn_norm.weight"))?;
            layer.ffn_norm = vector(&format!("blk.{i}.ffn_norm.weight"))?;
        }
        let norm = vector("output_norm.weight")?;
        let embd_info = ct
            .tensor_infos
            .get("token_embd.weight")
            .context("no token_embd.weight")?;
        let embd = match embd_info.ggml_dtype {
            GgmlDType::Q4_1 | GgmlDType::Q8_0 => {
                let qt = ct.tensor(reader, "token_embd.weight", &dev)?;
                let (rows, cols) = qt.shape().dims2()?;
                let ty = weight_type("token_embd.weight", qt.dtype())?;
                Embedding::Quantized(QMatrix::from_ggml(ty, rows, cols, &qt.data()?)?)
            }
            GgmlDType::F32 if output.is_some() => Embedding::F32 {
                data: vector("token_embd.weight")?,
                dim,
            },
            other => bail!("token_embd.weight is {other:?}"),
        };
        let check = |m: &QMatrix, rows: usize, cols: usize, what: &str| -> Result<()> {
            if m.rows != rows || m.cols != cols {
                bail!("{what} is {}x{}, expected {rows}x{cols}", m.rows, m.cols);
            }
            Ok(())
        };
        let (qd, kvd, ffn) = (n_heads * head_dim, n_kv_heads * head_dim, cfg.ffn_dim);
        for l in &layers {
            check(&l.wq, qd, dim, "attn_q")?;
            check(&l.wk, kvd, dim, "attn_k")?;
            check(&l.wv, kvd, dim, "attn_v")?;
            check(&l.wo, dim, qd, "attn_output")?;
            check(&l.gate, ffn, dim, "ffn_gate")?;
            check(&l.up, ffn, dim, "ffn_up")?;
            check(&l.down, dim, ffn, "ffn_down")?;
            if l.attn_norm.len() != dim || l.ffn_norm.len() != dim {
                bail!("norm weights of the wrong length");
            }
        }
        if let Some(o) = &output {
            if o.cols != dim {
                bail!("output.weight has rows of {}, expected {dim}", o.cols);
            }
        }
        let inv_freq = (0..head_dim / 2)
            .map(|j| 1f32 / cfg.rope_base.powf((2 * j) as f32 / head_dim as f32))
            .collect();
        Ok(Self {
            inv_freq,
            cfg,
            embd,
            layers,
            norm,
            output,
        })
    }

    fn head(&self) -> &QMatrix {
        match (&self.output, &self.embd) {
            (Some(o), _) => o,
            (None, Embedding::Quantized(e)) => e,
            (None, Embedding::F32 { .. }) => unreachable!("checked at load"),
        }
    }

    fn embed(&self, token: u32, out: &mut [f32]) -> Result<()> {
        match &self.embd {
            Embedding::Quantized(m) => {
                if token as usize >= m.rows {
                    bail!("token {token} is outside the embedding");
                }
                m.dequantize_row(token as usize, out);
            }
            Embedding::F32 { data, dim } => {
                let row = data
                    .get(token as usize * dim..(token as usize + 1) * dim)
                    .with_context(|| format!("token {token} is outside the embedding"))?;
                out.copy_from_slice(row);
            }
        }
        Ok(())
    }

    /// An empty KV cache for one sequence.
    pub fn new_cache(&self) -> Cache {
        Cache {
            pos: 0,
            k: vec![F16Buf::default(); self.cfg.n_layers],
            v: vec![F16Buf::default(); self.cfg.n_layers],
        }
    }

    /// A new cache holding the first `n` positions of `cache` (a copy).
    pub fn copy_prefix(&self, cache: &Cache, n: usize) -> Cache {
        assert!(
            n <= cache.pos,
            "a prefix of {n} from a cache of {}",
            cache.pos
        );
        let kvdim = self.cfg.n_kv_heads * self.cfg.head_dim;
        let copy = |layers: &[F16Buf]| layers.iter().map(|l| l.prefix(n * kvdim)).collect();
        Cache {
            pos: n,
            k: copy(&cache.k),
            v: copy(&cache.v),
        }
    }

    /// Drops whatever a failed forward pass appended to `cache` beyond its
    /// position, so the sequence can go on (or be dropped) consistently.
    pub fn rollback(&self, cache: &mut Cache) {
        let kvdim = self.cfg.n_kv_heads * self.cfg.head_dim;
        for layer in cache.k.iter_mut().chain(cache.v.iter_mut()) {
            layer.truncate(cache.pos * kvdim);
        }
    }

    /// Runs every segment's tokens (each at its own cache's next positions)
    /// through the model in one pass, appending to each KV cache; returns, for
    /// each segment that asks, the next-token logits after its last token.
    ///
    /// The segments' tokens are stacked into one activation matrix, so every
    /// weight matrix is read once for the whole batch; only attention (over
    /// each sequence's own cache) and RoPE (at each token's own position) are
    /// per segment. A token's results do not depend on what else is in the
    /// batch: decoding alone or together gives bit-identical logits.
    pub fn forward(
        &self,
        segments: &mut [Segment<'_>],
        s: &mut Scratch,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let cfg = &self.cfg;
        let t: usize = segments.iter().map(|g| g.tokens.len()).sum();
        if segments.iter().any(|g| g.tokens.is_empty()) {
            bail!("a segment without tokens");
        }
        let (dim, hd, nh, nkv) = (cfg.dim, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
        let (qdim, kvdim, ffn) = (nh * hd, nkv * hd, cfg.ffn_dim);
        for (buf, len) in [
            (&mut s.x, t * dim),
            (&mut s.xn, t * dim),
            (&mut s.q, t * qdim),
            (&mut s.k, t * kvdim),
            (&mut s.v, t * kvdim),
            (&mut s.att, t * qdim),
            (&mut s.y, t * dim),
            (&mut s.g, t * ffn),
            (&mut s.u, t * ffn),
        ] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        // Where each segment's rows start, and every token's position.
        s.spans.clear();
        s.positions.clear();
        let mut row = 0;
        for g in segments.iter() {
            s.spans.push(Span {
                row,
                len: g.tokens.len(),
                pos0: g.cache.pos,
            });
            s.positions
                .extend(g.cache.pos..g.cache.pos + g.tokens.len());
            row += g.tokens.len();
        }
        for (i, &tok) in segments.iter().flat_map(|g| g.tokens).enumerate() {
            self.embed(tok, &mut s.x[i * dim..(i + 1) * dim])?;
        }
        // RoPE angles for these positions, as candle computes them (f32).
        s.cos.clear();
        s.sin.clear();
        for &p in &s.positions {
            for &theta in &self.inv_freq {
                let a = p as f32 * theta;
                s.cos.push(a.cos());
                s.sin.push(a.sin());
            }
        }
        let out = |buf: &mut Vec<f32>, stride: usize| Out {
            ptr: buf.as_mut_ptr(),
            stride,
        };
        for (li, layer) in self.layers.iter().enumerate() {
            // Attention.
            par_rows(&mut s.xn, dim, &|rows, out| {
                rms_norm(
                    &s.x[rows.start * dim..rows.end * dim],
                    &layer.attn_norm,
                    cfg.eps,
                    out,
                    dim,
                )
            });
            s.acts.quantize(&s.xn, t, dim);
            let jobs = [
                MatJob {
                    w: &layer.wq,
                    out: out(&mut s.q, qdim),
                },
                MatJob {
                    w: &layer.wk,
                    out: out(&mut s.k, kvdim),
                },
                MatJob {
                    w: &layer.wv,
                    out: out(&mut s.v, kvdim),
                },
            ];
            // SAFETY: each output buffer holds t rows of its matrix's rows.
            unsafe { kernels::par_matmul(&jobs, &s.acts) };
            rope(&mut s.q, nh, hd, &s.cos, &s.sin);
            rope(&mut s.k, nkv, hd, &s.cos, &s.sin);
            for (g, span) in segments.iter_mut().zip(&s.spans) {
                let rows = span.row * kvdim..(span.row + span.len) * kvdim;
                g.cache.k[li].extend_f32(&s.k[rows.clone()]);
                g.cache.v[li].extend_f32(&s.v[rows]);
            }
            let kv: Vec<(&[u16], &[u16])> = segments
                .iter()
                .map(|g| (g.cache.k[li].as_slice(), g.cache.v[li].as_slice()))
                .collect();
            attention(
                cfg,
                &s.spans,
                &kv,
                &s.q,
                &mut s.att,
                &mut s.scores,
                &mut s.partial,
            );
            s.acts.quantize(&s.att, t, qdim);
            let jobs = [MatJob {
                w: &layer.wo,
                out: out(&mut s.y, dim),
            }];
            // SAFETY: y holds t rows of dim.
            unsafe { kernels::par_matmul(&jobs, &s.acts) };
            par_rows(&mut s.x, dim, &|rows, x| {
                for (x, y) in x.iter_mut().zip(&s.y[rows.start * dim..rows.end * dim]) {
                    *x += y;
                }
            });
            // MLP.
            par_rows(&mut s.xn, dim, &|rows, out| {
                rms_norm(
                    &s.x[rows.start * dim..rows.end * dim],
                    &layer.ffn_norm,
                    cfg.eps,
                    out,
                    dim,
                )
            });
            s.acts.quantize(&s.xn, t, dim);
            let jobs = [
                MatJob {
                    w: &layer.gate,
                    out: out(&mut s.g, ffn),
                },
                MatJob {
                    w: &layer.up,
                    out: out(&mut s.u, ffn),
                },
            ];
            // SAFETY: g and u hold t rows of ffn.
            unsafe { kernels::par_matmul(&jobs, &s.acts) };
            par_rows(&mut s.g, ffn, &|rows, g| {
                kernels::silu_mul(g, &s.u[rows.start * ffn..rows.end * ffn])
            });
            s.acts.quantize(&s.g, t, ffn);
            let jobs = [MatJob {
                w: &layer.down,
                out: out(&mut s.y, dim),
            }];
            // SAFETY: y holds t rows of dim.
            unsafe { kernels::par_matmul(&jobs, &s.acts) };
            par_rows(&mut s.x, dim, &|rows, x| {
                for (x, y) in x.iter_mut().zip(&s.y[rows.start * dim..rows.end * dim]) {
                    *x += y;
                }
            });
        }
        for (g, span) in segments.iter_mut().zip(&s.spans) {
            g.cache.pos += span.len;
        }
        // The output head, once for the last token of every segment that
        // wants logits.
        let wanted: Vec<usize> = segments
            .iter()
            .zip(&s.spans)
            .filter(|(g, _)| g.logits)
            .map(|(_, span)| span.row + span.len - 1)
            .collect();
        let mut logits = Vec::with_capacity(segments.len());
        if wanted.is_empty() {
            logits.resize_with(segments.len(), || None);
            return Ok(logits);
        }
        let n = wanted.len();
        for (i, &r) in wanted.iter().enumerate() {
            rms_norm(
                &s.x[r * dim..(r + 1) * dim],
                &self.norm,
                cfg.eps,
                &mut s.xn[i * dim..(i + 1) * dim],
                dim,
            );
        }
        s.acts.quantize(&s.xn[..n * dim], n, dim);
        let head = self.head();
        let vocab = head.rows;
        // The head writes every element of its n rows.
        let mut all = std::mem::take(&mut s.logits);
        grow(&mut all, n * vocab);
        let jobs = [MatJob {
            w: head,
            out: out(&mut all, vocab),
        }];
        // SAFETY: `all` holds at least n rows of the head's rows.
        unsafe { kernels::par_matmul(&jobs, &s.acts) };
        let mut rows = all[..n * vocab].chunks_exact(vocab);
        for g in segments.iter() {
            logits.push(
                g.logits
                    .then(|| rows.next().expect("one row per wanted segment").to_vec()),
            );
        }
        s.logits = all;
        Ok(logits)
    }
}

/// One sequence's part of a batched [`Llama::forward`].
pub struct Segment<'a> {
    pub cache: &'a mut Cache,
    pub tokens: &'a [u32],
    /// Whether to compute the next-token logits after the last token.
    pub logits: bool,
}

/// One sequence's KV cache: per layer, `[position][kv head][head dim]`, so a
/// new position is an append; values in f16 (as llama.cpp keeps them by
/// default), which halves what attention reads per position and the memory
/// a sequence holds; each layer's on cache-line boundaries ([`F16Buf`]).
#[derive(Default)]
pub struct Cache {
    pos: usize,
    k: Vec<F16Buf>,
    v: Vec<F16Buf>,
}

impl Cache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Gives back the room reserved for positions to come.
    pub fn shrink_to_fit(&mut self) {
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            layer.shrink_to_fit();
        }
    }

    /// A cache of `pos` positions, `kvdim` zeros each per layer (for tests
    /// of what keeps caches).
    #[cfg(test)]
    pub(crate) fn zeros(layers: usize, pos: usize, kvdim: usize) -> Cache {
        Cache {
            pos,
            k: vec![F16Buf::zeros(pos * kvdim); layers],
            v: vec![F16Buf::zeros(pos * kvdim); layers],
        }
    }

    /// Memory its keys and values take.
    pub fn bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(F16Buf::capacity_bytes)
            .sum()
    }
}

/// Where a segment's tokens sit in the batch.
#[derive(Clone, Copy)]
struct Span {
    /// First row in the stacked activations.
    row: usize,
    len: usize,
    /// Position of its first token in its sequence.
    pos0: usize,
}

/// Activation buffers of a forward pass, sized for the largest batch seen;
/// one set serves every sequence of a model (one batch runs at a time).
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    y: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    scores: Vec<f32>,
    /// [`attention`]'s per-stretch outputs and log-sum-exps.
    partial: Vec<f32>,
    spans: Vec<Span>,
    positions: Vec<usize>,
    acts: QActs,
    /// The output head's rows for every segment that wants logits (kept, as
    /// the rest: a fresh buffer per pass, 200 KB per sequence, was zeroed
    /// or page-faulted in on every step).
    logits: Vec<f32>,
}

/// `f(rows, out)` for the rows of `out` (`width` values each), a range of
/// rows per pool thread when there are enough (a prompt chunk): what the
/// forward pass does between matmuls must not leave the other threads idle.
fn par_rows(out: &mut [f32], width: usize, f: &(dyn Fn(Range<usize>, &mut [f32]) + Sync)) {
    let ptr = SyncPtr(out.as_mut_ptr());
    kernels::par_for(out.len() / width, 8, &|rows: Range<usize>| {
        // SAFETY: every call gets a distinct range of rows of `out`.
        let out = unsafe {
            std::slice::from_raw_parts_mut(ptr.get().add(rows.start * width), rows.len() * width)
        };
        f(rows, out)
    });
}

/// Makes `buf` hold at least `n` elements, keeping what it holds: for scratch
/// buffers whose elements are all written before any is read, where zeroing
/// them every pass (the logits' n × vocab floats, attention scores per layer)
/// would be wasted work.
fn grow(buf: &mut Vec<f32>, n: usize) {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
}

/// Row-wise RMSNorm as candle's `rms_norm` computes it, up to the order in
/// which the squares are summed: sixteen partial sums ([`kernels::dot_f32`]),
/// where one running sum made each row a chain of dependent additions
/// (~1 µs per row of 576; a decoding step of 4 sequences normalizes 8 rows
/// per layer on one thread).
fn rms_norm(x: &[f32], alpha: &[f32], eps: f32, out: &mut [f32], dim: usize) {
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let sum2 = kernels::dot_f32(xr, xr);
        let m = (sum2 / dim as f32 + eps).sqrt();
        for ((o, &v), &a) in or.iter_mut().zip(xr).zip(alpha) {
            *o = v / m * a;
        }
    }
}

/// Interleaved RoPE (pairs `2j, 2j+1`) over `heads` heads of every token.
fn rope(x: &mut [f32], heads: usize, hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for (i, tok) in x.chunks_exact_mut(heads * hd).enumerate() {
        let (c, s) = (
            &cos[i * half..(i + 1) * half],
            &sin[i * half..(i + 1) * half],
        );
        for head in tok.chunks_exact_mut(hd) {
            for j in 0..half {
                let (x0, x1) = (head[2 * j], head[2 * j + 1]);
                head[2 * j] = x0 * c[j] - x1 * s[j];
                head[2 * j + 1] = x0 * s[j] + x1 * c[j];
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: parts of the attention job write disjoint ranges.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so closures capture the whole `SyncPtr`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Causal attention of every segment's new queries over its own cache,
/// split across the pool by (segment, query chunk, KV head): the query heads
/// that share a KV head are done together, so each cached vector is read
/// once per query rather than once per head.
///
/// A query over at least two [`MIN_STRETCH`]es of positions also splits them
/// into up to [`MAX_STRETCHES`] stretches, units of their own, attended
/// separately and merged by their log-sum-exps ([`kernels::merge_attention`]):
/// one decoding sequence is otherwise 3 units (KV heads) on 2 threads, one
/// thread idle a third of the time, and attention is most of a step at long
/// contexts. One sequence at 1500 positions, Zen 4 EPYC, 2 threads: decode
/// ~10% faster (5 of 6 alternated rounds). How a query is split depends on
/// its own position alone, never on the batch or the threads, so results
/// stay bit-identical however tokens are batched or a prompt is fed.
fn attention(
    cfg: &Config,
    spans: &[Span],
    kv: &[(&[u16], &[u16])],
    q: &[f32],
    att: &mut [f32],
    scores: &mut Vec<f32>,
    partial: &mut Vec<f32>,
) {
    let (hd, nh, nkv) = (cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
    let (qdim, kvdim) = (nh * hd, nkv * hd);
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let kv_max = spans.iter().map(|s| s.pos0 + s.len).max().unwrap_or(0);
    let pool = kernels::pool::global();
    let threads = pool.threads();
    // The kernels write every score before reading it.
    grow(scores, threads * group * kv_max);
    let t: usize = spans.iter().map(|s| s.len).sum();
    const QCHUNK: usize = 8;
    // Work units in order: segment, then query chunk, then KV head, then stretch.
    let chunks: usize = spans.iter().map(|s| s.len.div_ceil(QCHUNK)).sum();
    // A KV head's query heads go together, even when that leaves fewer
    // units than threads (one decoding sequence at a short context: 3 units
    // on 2 threads): grouped, a head costs about half as much as alone,
    // which more than pays for the uneven split. Units of stretches a query
    // does not have are skipped.
    let stretches = stretches_for(kv_max);
    let units = nkv * chunks * stretches;
    // Per stretch: every row's outputs (t × qdim; a query of one stretch
    // writes to `att` instead), then every row's heads' log-sum-exps (t × nh).
    let per_stretch = t * (qdim + nh);
    grow(partial, stretches * per_stretch);
    let att_ptr = SyncPtr(att.as_mut_ptr());
    let sc_ptr = SyncPtr(scores.as_mut_ptr());
    let part_ptr = SyncPtr(partial.as_mut_ptr());
    // Threads take units from a shared counter (see `kernels::par_matmul`).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |part: usize, _parts: usize| {
        let (att_ptr, sc_ptr, part_ptr) = (att_ptr, sc_ptr, part_ptr);
        // SAFETY: each part uses its own stretch of the scores buffer.
        let sc_all = unsafe {
            std::slice::from_raw_parts_mut(sc_ptr.0.add(part * group * kv_max), group * kv_max)
        };
        let (mut seg, mut first_chunk) = (0, 0);
        // Each thread's units come in increasing order, so the segment
        // search below only moves forward.
        loop {
            let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if u >= units {
                break;
            }
            let stretch = u % stretches;
            let g = u / stretches % nkv;
            let chunk = u / stretches / nkv;
            while chunk >= first_chunk + spans[seg].len.div_ceil(QCHUNK) {
                first_chunk += spans[seg].len.div_ceil(QCHUNK);
                seg += 1;
            }
            let span = spans[seg];
            let (kc, vc) = kv[seg];
            let c = chunk - first_chunk;
            let heads = g * group * hd..(g + 1) * group * hd;
            for i in c * QCHUNK..((c + 1) * QCHUNK).min(span.len) {
                let n = span.pos0 + i + 1;
                let pieces = stretches_for(n);
                if stretch >= pieces {
                    continue;
                }
                let (j0, j1) = (stretch * n / pieces, (stretch + 1) * n / pieces);
                let r = span.row + i;
                let qi = &q[r * qdim + heads.start..r * qdim + heads.end];
                let base = stretch * per_stretch;
                let o = if pieces == 1 {
                    att_ptr.0.wrapping_add(r * qdim + heads.start)
                } else {
                    part_ptr.0.wrapping_add(base + r * qdim + heads.start)
                };
                let lse = part_ptr
                    .0
                    .wrapping_add(base + t * qdim + r * nh + g * group);
                // SAFETY: (query row r, KV head g's query heads, stretch) are
                // this unit's alone; both buffers were sized above.
                let (o, lse) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(o, heads.len()),
                        std::slice::from_raw_parts_mut(lse, group),
                    )
                };
                kernels::attend(
                    hd,
                    qi,
                    &kc[j0 * kvdim..],
                    &vc[j0 * kvdim..],
                    kvdim,
                    g * hd,
                    scale,
                    &mut sc_all[..group * (j1 - j0)],
                    o,
                    lse,
                );
            }
        }
    };
    if units == 1 || threads == 1 {
        work(0, 1);
    } else {
        pool.run(&work);
    }
    if stretches > 1 {
        let partial = &partial[..];
        // Rows in parallel: a long prompt's queries all have stretches.
        kernels::par_for(t, 8, &|rows| {
            for r in rows {
                let span = spans
                    .iter()
                    .find(|s| (s.row..s.row + s.len).contains(&r))
                    .expect("every row is in a span");
                let pieces = stretches_for(span.pos0 + r - span.row + 1);
                if pieces == 1 {
                    continue;
                }
                let at = |stretch: usize, from: usize, len: usize| {
                    &partial[stretch * per_stretch + from..][..len]
                };
                // No allocation per row and layer: at most MAX_STRETCHES each.
                let outs: [&[f32]; MAX_STRETCHES] =
                    std::array::from_fn(|p| at(p.min(pieces - 1), r * qdim, qdim));
                let lses: [&[f32]; MAX_STRETCHES] =
                    std::array::from_fn(|p| at(p.min(pieces - 1), t * qdim + r * nh, nh));
                // SAFETY: row r is this call's alone.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(att_ptr.get().add(r * qdim), qdim) };
                kernels::merge_attention(hd, &outs[..pieces], &lses[..pieces], out);
            }
        });
    }
}

/// The fewest positions worth a stretch of their own in [`attention`].
const MIN_STRETCH: usize = 128;
/// The most stretches a query's positions are split into.
const MAX_STRETCHES: usize = 4;

/// Stretches the positions of a query over `n` of them are attended in.
fn stretches_for(n: usize) -> usize {
    (n / MIN_STRETCH).clamp(1, MAX_STRETCHES)
}
