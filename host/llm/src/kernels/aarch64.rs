//! aarch64 Advanced SIMD (NEON) kernels: integer block dot products, f32
//! scaling per block in the same order as the scalar kernels.
//!
//! Each weight row is unpacked once per tile of up to four tokens (a
//! prompt's tokens share it). Where the CPU has the dot-product extension
//! (ARMv8.2 `sdot`: Cortex-A55/A76, so RK3588 boards, and Apple cores) one
//! `sdot` sums 16 products into 4 lanes; baseline NEON (Cortex-A53/A72)
//! takes `smull` + pairwise adds.

use std::arch::aarch64::*;
use std::ops::Range;

use super::{f16_to_f32, read_u16, Out, QActs, QMatrix, WeightType, QK};

/// # Safety
/// The CPU supports NEON; `out` as [`super::matmul_rows`].
#[target_feature(enable = "neon")]
pub unsafe fn matmul_neon(w: &QMatrix, rows: Range<usize>, acts: &QActs, out: Out) {
    let dot = std::arch::is_aarch64_feature_detected!("dotprod");
    for r in rows {
        let mut t = 0;
        while t < acts.t {
            let n = (acts.t - t).min(4);
            macro_rules! tile {
                ($f:ident) => {
                    match n {
                        4 => $f::<4>(w, r, acts, t, out),
                        3 => $f::<3>(w, r, acts, t, out),
                        2 => $f::<2>(w, r, acts, t, out),
                        _ => $f::<1>(w, r, acts, t, out),
                    }
                };
            }
            match (w.ty, dot) {
                (WeightType::Q4_1, true) => tile!(tile_q4_1_dot),
                (WeightType::Q4_1, false) => tile!(tile_q4_1),
                (WeightType::Q8_0, true) => tile!(tile_q8_0_dot),
                (WeightType::Q8_0, false) => tile!(tile_q8_0),
            }
            t += n;
        }
    }
}

/// Σ w[i]·a[i] over 16 signed bytes, in 4 lanes (baseline NEON).
#[inline]
#[target_feature(enable = "neon")]
fn dot16(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
    let hi = vmull_high_s8(w, a);
    vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

/// `acc` plus Σ w[i]·a[i] over 16 signed bytes, in 4 lanes, with `sdot`
/// (its intrinsic is not stable Rust yet).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        a = in(vreg) a,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// Defines a Q4_1 tile: row `r` against tokens `t0..t0 + N`, with `$dot`
/// summing 16 products into 4 lanes.
macro_rules! q4_1_tile {
    ($name:ident, $features:literal, $dot:expr) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(w: &QMatrix, r: usize, acts: &QActs, t0: usize, out: Out) {
            let nb = w.nb();
            let (qs, scales) = w.row(r).split_at(w.kpad / 2);
            let m4 = vdupq_n_u8(0x0F);
            let mut sumf = [0f32; N];
            // Pair p: low nibbles are block 2p, high nibbles block 2p + 1.
            for p in 0..nb / 2 {
                let q = qs.as_ptr().add(32 * p);
                let (x0, x1) = (vld1q_u8(q), vld1q_u8(q.add(16)));
                let wa0 = vreinterpretq_s8_u8(vandq_u8(x0, m4));
                let wa1 = vreinterpretq_s8_u8(vandq_u8(x1, m4));
                let wb0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(x0));
                let wb1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(x1));
                let blocks = [(2 * p, wa0, wa1, 0), (2 * p + 1, wb0, wb1, 32)];
                let dm = blocks.map(|(b, ..)| {
                    (
                        f16_to_f32(read_u16(scales, b)),
                        f16_to_f32(read_u16(scales, nb + b)),
                    )
                });
                for i in 0..N {
                    let t = t0 + i;
                    let ap = acts.token_qs(t).as_ptr().add(64 * p);
                    let (ad, a_s) = (acts.token_d(t), acts.token_s(t));
                    for ((b, w0, w1, at), (d, m)) in blocks.into_iter().zip(dm) {
                        let a0 = vld1q_s8(ap.add(at));
                        let a1 = vld1q_s8(ap.add(at + 16));
                        let sumi = vaddvq_s32($dot(w0, a0, w1, a1));
                        sumf[i] += sumi as f32 * d * ad[b] + m * a_s[b];
                    }
                }
            }
            for i in 0..N {
                *out.ptr.add((t0 + i) * out.stride + r) = sumf[i];
            }
        }
    };
}

/// Defines a Q8_0 tile (as [`q4_1_tile`]).
macro_rules! q8_0_tile {
    ($name:ident, $features:literal, $dot:expr) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(w: &QMatrix, r: usize, acts: &QActs, t0: usize, out: Out) {
            let nb = w.nb();
            let (qs, scales) = w.row(r).split_at(w.kpad);
            let mut sumf = [0f32; N];
            for b in 0..nb {
                let q = qs.as_ptr().add(QK * b) as *const i8;
                let (w0, w1) = (vld1q_s8(q), vld1q_s8(q.add(16)));
                let d = f16_to_f32(read_u16(scales, b));
                for i in 0..N {
                    let t = t0 + i;
                    let ab = acts.token_qs(t).as_ptr().add(QK * b);
                    let (a0, a1) = (vld1q_s8(ab), vld1q_s8(ab.add(16)));
                    let sumi = vaddvq_s32($dot(w0, a0, w1, a1));
                    sumf[i] += sumi as f32 * d * acts.token_d(t)[b];
                }
            }
            for i in 0..N {
                *out.ptr.add((t0 + i) * out.stride + r) = sumf[i];
            }
        }
    };
}

q4_1_tile!(tile_q4_1, "neon", |w0, a0, w1, a1| vaddq_s32(
    dot16(w0, a0),
    dot16(w1, a1)
));
q4_1_tile!(tile_q4_1_dot, "neon,dotprod", |w0, a0, w1, a1| sdot(
    sdot(vdupq_n_s32(0), w0, a0),
    w1,
    a1
));
q8_0_tile!(tile_q8_0, "neon", |w0, a0, w1, a1| vaddq_s32(
    dot16(w0, a0),
    dot16(w1, a1)
));
q8_0_tile!(tile_q8_0_dot, "neon,dotprod", |w0, a0, w1, a1| sdot(
    sdot(vdupq_n_s32(0), w0, a0),
    w1,
    a1
));

/// 8 f16 values (bits) at `p` as two vectors of 4 f32 (`fcvtl`: the f16
/// vector types are not stable Rust yet).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load8_f16(p: *const u16) -> [float32x4_t; 2] {
    let h = vld1q_u16(p);
    let (lo, hi): (float32x4_t, float32x4_t);
    std::arch::asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    [lo, hi]
}

/// `e^x` for 4 lanes, as the x86 `exp256` computes it (`x` clamped to
/// −87..88, `2^n` built in the exponent bits).
#[inline]
#[target_feature(enable = "neon")]
fn exp128(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)));
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.987_569_2e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let e = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), vmulq_f32(p, r), r);
    let pow2n = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(e, vreinterpretq_f32_s32(pow2n))
}

/// [`super::exp_shifted`], 4 values at a time with [`exp128`]; a value of
/// −∞ gives exactly 0 (exp128 would clamp it to `e^-87`).
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub unsafe fn exp_shifted_neon(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    let n = x.len().min(out.len());
    let (vshift, vscale) = (vdupq_n_f32(shift), vdupq_n_f32(scale));
    let neg_inf = vdupq_n_f32(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 4 <= n {
        let v = vld1q_f32(x.as_ptr().add(i));
        let e = exp128(vmulq_f32(vsubq_f32(v, vshift), vscale));
        // All ones where v > −∞ (a NaN compares false and gives 0, as any
        // weight that is not a number must).
        let finite = vcgtq_f32(v, neg_inf);
        vst1q_f32(
            out.as_mut_ptr().add(i),
            vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), finite)),
        );
        i += 4;
    }
    super::scalar::exp_shifted(&x[i..n], shift, scale, &mut out[i..n]);
}

/// [`super::silu_mul`], 4 values at a time with [`exp128`].
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub unsafe fn silu_mul_neon(g: &mut [f32], u: &[f32]) {
    let n = g.len().min(u.len());
    let one = vdupq_n_f32(1.0);
    let mut i = 0;
    while i + 4 <= n {
        let x = vld1q_f32(g.as_ptr().add(i));
        let y = vld1q_f32(u.as_ptr().add(i));
        let s = vdivq_f32(x, vaddq_f32(one, exp128(vnegq_f32(x))));
        vst1q_f32(g.as_mut_ptr().add(i), vmulq_f32(s, y));
        i += 4;
    }
    super::scalar::silu_mul(&mut g[i..n], &u[i..n]);
}

/// [`super::attend`] for 64-wide heads with NEON: each position's key is
/// widened from f16 once for all of the group's heads, the softmax's
/// exponentials are computed 4 at a time ([`exp128`]) instead of one libm
/// call per score, and the weighted values are summed a quarter head
/// (16 dimensions) at a time so a group's accumulators stay in registers.
///
/// # Safety
/// The CPU supports NEON; the slices are as [`super::attend`] checks.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend64_neon<const G: usize>(
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
    let (qp, kp, vp, sp) = (
        q.as_ptr(),
        keys.as_ptr().add(off),
        values.as_ptr().add(off),
        scores.as_mut_ptr(),
    );
    let mut max = [f32::NEG_INFINITY; G];
    for j in 0..n {
        let k = kp.add(j * stride);
        let mut kv = [vdupq_n_f32(0.0); 16];
        for c in 0..8 {
            [kv[2 * c], kv[2 * c + 1]] = load8_f16(k.add(8 * c));
        }
        for h in 0..G {
            let qh = qp.add(h * 64);
            let mut acc = [vdupq_n_f32(0.0); 4];
            for c in 0..16 {
                acc[c % 4] = vfmaq_f32(acc[c % 4], vld1q_f32(qh.add(4 * c)), kv[c]);
            }
            let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
            let s = vaddvq_f32(sum) * scale;
            *sp.add(h * n + j) = s;
            max[h] = max[h].max(s);
        }
    }
    // Softmax numerators in place, and the reciprocal of each head's sum.
    let mut inv = [0f32; G];
    let mut lse = [0f32; G];
    for h in 0..G {
        let row = std::slice::from_raw_parts_mut(sp.add(h * n), n);
        let m = vdupq_n_f32(max[h]);
        let mut sum = vdupq_n_f32(0.0);
        let mut chunks = row.chunks_exact_mut(4);
        for c in &mut chunks {
            let e = exp128(vsubq_f32(vld1q_f32(c.as_ptr()), m));
            vst1q_f32(c.as_mut_ptr(), e);
            sum = vaddq_f32(sum, e);
        }
        let mut total = vaddvq_f32(sum);
        for s in chunks.into_remainder() {
            let e = vgetq_lane_f32::<0>(exp128(vdupq_n_f32(*s - max[h])));
            *s = e;
            total += e;
        }
        inv[h] = 1.0 / total;
        lse[h] = max[h] + total.ln();
    }
    // Weighted sum of the values, a quarter head at a time.
    for part in 0..4 {
        let mut o = [[vdupq_n_f32(0.0); 4]; G];
        for j in 0..n {
            let v = vp.add(j * stride + 16 * part);
            let [v0, v1] = load8_f16(v);
            let [v2, v3] = load8_f16(v.add(8));
            for h in 0..G {
                let p = vdupq_n_f32(*sp.add(h * n + j) * inv[h]);
                for (o, v) in o[h].iter_mut().zip([v0, v1, v2, v3]) {
                    *o = vfmaq_f32(*o, p, v);
                }
            }
        }
        for h in 0..G {
            for c in 0..4 {
                vst1q_f32(out.as_mut_ptr().add(h * 64 + 16 * part + 4 * c), o[h][c]);
            }
        }
    }
    lse
}
