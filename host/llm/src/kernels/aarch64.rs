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
