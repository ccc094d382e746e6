//! Portable kernels: the reference for the SIMD versions, and what runs on
//! CPUs with none of them. Per block they compute exactly what ggml's (and
//! candle's) generic `vec_dot_q4_1_q8_1` / `vec_dot_q8_0_q8_0` compute, in
//! the same order.

use std::ops::Range;

use super::{f16_to_f32, read_u16, Out, QActs, QMatrix, WeightType, QK};

/// Dot product of weight row `row` with token `t` of `acts`.
pub fn dot_row(w: &QMatrix, row: &[u8], acts: &QActs, t: usize) -> f32 {
    let nb = w.nb();
    let a = acts.token_qs(t);
    let ad = acts.token_d(t);
    let mut sumf = 0f32;
    match w.ty {
        WeightType::Q4_1 => {
            let (qs, scales) = row.split_at(w.kpad / 2);
            let a_s = acts.token_s(t);
            for b in 0..nb {
                let pair = &qs[(b / 2) * 32..(b / 2) * 32 + 32];
                let shift = 4 * (b % 2);
                let ab = &a[b * QK..(b + 1) * QK];
                let mut sumi = 0i32;
                for j in 0..QK {
                    sumi += ((pair[j] >> shift) & 0x0F) as i32 * ab[j] as i32;
                }
                let d = f16_to_f32(read_u16(scales, b));
                let m = f16_to_f32(read_u16(scales, nb + b));
                sumf += sumi as f32 * d * ad[b] + m * a_s[b];
            }
        }
        WeightType::Q8_0 => {
            let (qs, scales) = row.split_at(w.kpad);
            for b in 0..nb {
                let mut sumi = 0i32;
                for j in b * QK..(b + 1) * QK {
                    sumi += qs[j] as i8 as i32 * a[j] as i32;
                }
                sumf += sumi as f32 * f16_to_f32(read_u16(scales, b)) * ad[b];
            }
        }
    }
    sumf
}

/// # Safety
/// As [`super::matmul_rows`].
pub unsafe fn matmul(w: &QMatrix, rows: Range<usize>, acts: &QActs, out: Out) {
    for r in rows {
        let row = w.row(r);
        for t in 0..acts.t {
            let v = dot_row(w, row, acts, t);
            // SAFETY: the caller vouches for `out` at (t, r).
            unsafe { *out.ptr.add(t * out.stride + r) = v };
        }
    }
}

/// Sixteen independent partial sums, so the compiler can vectorise this
/// (the x86 module instantiates it with AVX2 enabled).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, ar) = a.as_chunks::<16>();
    let (bc, br) = b.as_chunks::<16>();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0f32;
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    for i in 0..8 {
        acc[i] += acc[i + 8];
    }
    for i in 0..4 {
        acc[i] += acc[i + 4];
    }
    s + (acc[0] + acc[2]) + (acc[1] + acc[3])
}

/// [`super::silu_mul`], one libm `exp` per value.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    for (g, u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// [`super::exp_shifted`], one libm `exp` per value.
pub fn exp_shifted(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = ((x - shift) * scale).exp();
    }
}

#[inline(always)]
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// One cached key or value (f16 bits) as f32.
#[inline(always)]
fn f16_row<const HD: usize>(bits: &[u16]) -> [f32; HD] {
    let bits: &[u16; HD] = bits.try_into().expect("a row of the head size");
    std::array::from_fn(|d| f16_to_f32(bits[d]))
}

/// One query's attention for the `G` heads that share a KV head (grouped-
/// query attention), over `n` cached positions, head dim `HD`: scores
/// (`q·k · scale`, the same sums as [`dot_f32`]), softmax, and the weighted
/// sum of values, kept in registers. Each key and value vector is loaded once
/// for all `G` heads; every head's arithmetic is exactly what it would be
/// alone. `q` and `out` hold the `G` heads one after another, `scores` is
/// `G × n` scratch; `keys`/`values` hold position `j`'s vector (f16 bits) at
/// `j * stride + off`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn attend<const HD: usize, const G: usize>(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    off: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) -> [f32; G] {
    let n = scores.len() / G;
    let q: [&[f32; HD]; G] =
        std::array::from_fn(|h| q[h * HD..(h + 1) * HD].try_into().expect("query heads"));
    let mut max = [f32::NEG_INFINITY; G];
    for j in 0..n {
        let k = f16_row::<HD>(&keys[j * stride + off..j * stride + off + HD]);
        for h in 0..G {
            let s = dot_f32(q[h], &k) * scale;
            scores[h * n + j] = s;
            max[h] = max[h].max(s);
        }
    }
    let mut sum = [0f32; G];
    for h in 0..G {
        for s in &mut scores[h * n..(h + 1) * n] {
            *s = (*s - max[h]).exp();
            sum[h] += *s;
        }
    }
    let mut o = [[0f32; HD]; G];
    for j in 0..n {
        let v = f16_row::<HD>(&values[j * stride + off..j * stride + off + HD]);
        for h in 0..G {
            let p = scores[h * n + j] / sum[h];
            for d in 0..HD {
                o[h][d] += p * v[d];
            }
        }
    }
    for h in 0..G {
        out[h * HD..(h + 1) * HD].copy_from_slice(&o[h]);
    }
    std::array::from_fn(|h| max[h] + sum[h].ln())
}

/// [`attend`] for 64-wide heads (the fallback for levels without their own).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn attend64<const G: usize>(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    off: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) -> [f32; G] {
    attend::<64, G>(q, keys, values, stride, off, scale, scores, out)
}
