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

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;

use crate::kernels::{self, MatJob, Out, QActs, QMatrix, WeightType};

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
        Ok(Self {
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

    /// An empty KV cache and scratch buffers for one sequence.
    pub fn new_cache(&self) -> Cache {
        Cache {
            pos: 0,
            k: vec![Vec::new(); self.cfg.n_layers],
            v: vec![Vec::new(); self.cfg.n_layers],
            s: Scratch::default(),
        }
    }

    /// Runs `tokens` (at the cache's next positions) through the model,
    /// appending to the KV cache; returns the next-token logits after the last
    /// one when `logits` is set.
    pub fn forward(&self, c: &mut Cache, tokens: &[u32], logits: bool) -> Result<Option<Vec<f32>>> {
        let cfg = &self.cfg;
        let t = tokens.len();
        if t == 0 {
            bail!("no tokens");
        }
        let (dim, hd, nh, nkv) = (cfg.dim, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
        let (qdim, kvdim, ffn) = (nh * hd, nkv * hd, cfg.ffn_dim);
        let pos0 = c.pos;
        let s = &mut c.s;
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
        for (i, &tok) in tokens.iter().enumerate() {
            self.embed(tok, &mut s.x[i * dim..(i + 1) * dim])?;
        }
        // RoPE angles for these positions, as candle computes them (f32).
        let half = hd / 2;
        s.cos.clear();
        s.sin.clear();
        for i in 0..t {
            let p = (pos0 + i) as f32;
            for j in 0..half {
                let theta = 1f32 / cfg.rope_base.powf((2 * j) as f32 / hd as f32);
                let a = p * theta;
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
            rms_norm(&s.x, &layer.attn_norm, cfg.eps, &mut s.xn, dim);
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
            c.k[li].extend_from_slice(&s.k);
            c.v[li].extend_from_slice(&s.v);
            attention(
                cfg,
                pos0,
                t,
                &s.q,
                &c.k[li],
                &c.v[li],
                &mut s.att,
                &mut s.scores,
            );
            s.acts.quantize(&s.att, t, qdim);
            let jobs = [MatJob {
                w: &layer.wo,
                out: out(&mut s.y, dim),
            }];
            // SAFETY: y holds t rows of dim.
            unsafe { kernels::par_matmul(&jobs, &s.acts) };
            for (x, y) in s.x.iter_mut().zip(&s.y) {
                *x += y;
            }
            // MLP.
            rms_norm(&s.x, &layer.ffn_norm, cfg.eps, &mut s.xn, dim);
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
            for (g, u) in s.g.iter_mut().zip(&s.u) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            s.acts.quantize(&s.g, t, ffn);
            let jobs = [MatJob {
                w: &layer.down,
                out: out(&mut s.y, dim),
            }];
            // SAFETY: y holds t rows of dim.
            unsafe { kernels::par_matmul(&jobs, &s.acts) };
            for (x, y) in s.x.iter_mut().zip(&s.y) {
                *x += y;
            }
        }
        c.pos += t;
        if !logits {
            return Ok(None);
        }
        let last = &s.x[(t - 1) * dim..];
        rms_norm(last, &self.norm, cfg.eps, &mut s.xn[..dim], dim);
        s.acts.quantize(&s.xn[..dim], 1, dim);
        let head = self.head();
        let mut logits = vec![0f32; head.rows];
        let jobs = [MatJob {
            w: head,
            out: out(&mut logits, head.rows),
        }];
        // SAFETY: logits holds one row of the head's rows.
        unsafe { kernels::par_matmul(&jobs, &s.acts) };
        Ok(Some(logits))
    }
}

/// One sequence's KV cache (per layer, `[position][kv head][head dim]`, so a
/// new position is an append) and its scratch buffers.
pub struct Cache {
    pos: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    s: Scratch,
}

#[derive(Default)]
struct Scratch {
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
    acts: QActs,
}

/// Row-wise RMSNorm as candle's `rms_norm` computes it.
fn rms_norm(x: &[f32], alpha: &[f32], eps: f32, out: &mut [f32], dim: usize) {
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let sum2: f32 = xr.iter().map(|v| v * v).sum();
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

/// Causal attention of `t` new queries (positions `pos0..pos0+t`) over the
/// cache, split across the pool by (query chunk, head).
#[allow(clippy::too_many_arguments)]
fn attention(
    cfg: &Config,
    pos0: usize,
    t: usize,
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    att: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let (hd, nh, nkv) = (cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
    let (qdim, kvdim) = (nh * hd, nkv * hd);
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let kv_max = pos0 + t;
    let pool = kernels::pool::global();
    let threads = pool.threads();
    scores.clear();
    scores.resize(threads * kv_max, 0.0);
    let qchunk = 8;
    let units = nh * t.div_ceil(qchunk);
    let att_ptr = SyncPtr(att.as_mut_ptr());
    let sc_ptr = SyncPtr(scores.as_mut_ptr());
    let work = |part: usize, parts: usize| {
        let (att_ptr, sc_ptr) = (att_ptr, sc_ptr);
        // SAFETY: each part uses its own stretch of the scores buffer.
        let sc_all = unsafe { std::slice::from_raw_parts_mut(sc_ptr.0.add(part * kv_max), kv_max) };
        for u in (part..units).step_by(parts) {
            let h = u % nh;
            let g = h / group;
            let chunk = u / nh;
            for i in chunk * qchunk..((chunk + 1) * qchunk).min(t) {
                let n = pos0 + i + 1;
                let qi = &q[i * qdim + h * hd..i * qdim + (h + 1) * hd];
                // SAFETY: (query i, head h) is this unit's alone.
                let o =
                    unsafe { std::slice::from_raw_parts_mut(att_ptr.0.add(i * qdim + h * hd), hd) };
                kernels::attend(qi, kc, vc, kvdim, g * hd, scale, &mut sc_all[..n], o);
            }
        }
    };
    if units == 1 || threads == 1 {
        work(0, 1);
    } else {
        pool.run(&work);
    }
}
