//! Every kernel level against the scalar kernels, and the scalar kernels
//! against candle's quantized matmul.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn random_f32(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// Random values in (-1, 1) as f16 bits (a KV cache's contents).
fn random_f16(rng: &mut StdRng, n: usize) -> Vec<u16> {
    random_f32(rng, n, 1.0)
        .into_iter()
        .map(f32_to_f16)
        .collect()
}

/// Random raw ggml blocks: scales and quants of every possible value,
/// including Q8_0's -128.
fn random_ggml(rng: &mut StdRng, ty: WeightType, rows: usize, cols: usize) -> Vec<u8> {
    let blocks = rows * cols / QK;
    let mut raw = Vec::new();
    for _ in 0..blocks {
        let d = f32_to_f16(rng.random::<f32>() * 0.02);
        raw.extend_from_slice(&d.to_le_bytes());
        match ty {
            WeightType::Q4_1 => {
                let m = f32_to_f16((rng.random::<f32>() - 0.5) * 0.2);
                raw.extend_from_slice(&m.to_le_bytes());
                raw.extend((0..16).map(|_| rng.random::<u8>()));
            }
            WeightType::Q8_0 => raw.extend((0..32).map(|_| rng.random::<u8>())),
        }
    }
    raw
}

fn run(level: Level, w: &QMatrix, acts: &QActs) -> Vec<f32> {
    let mut out = vec![f32::NAN; acts.t * w.rows];
    let o = Out {
        ptr: out.as_mut_ptr(),
        stride: w.rows,
    };
    // Uneven row ranges exercise the range handling of every kernel; rows
    // outside the range stay untouched.
    let split = w.rows / 3;
    unsafe { matmul_rows(level, w, 0..split, acts, o) };
    for t in 0..acts.t {
        let rest = &out[t * w.rows + split..(t + 1) * w.rows];
        assert!(
            rest.iter().all(|v| v.is_nan()),
            "{level:?} wrote outside its rows"
        );
    }
    unsafe { matmul_rows(level, w, split..w.rows, acts, o) };
    out
}

#[test]
fn every_level_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(7);
    let levels = supported_levels();
    eprintln!("kernel levels on this CPU: {levels:?}");
    // Every aarch64 CPU has Advanced SIMD: a run there (or under qemu-aarch64,
    // as test.sh does) must exercise the NEON kernels.
    #[cfg(target_arch = "aarch64")]
    assert!(levels.contains(&Level::Neon), "{levels:?}");
    // 576 = 18 blocks, 96 = padding to 128, 1536 = 48 blocks; row counts
    // that are not multiples of 16 (a partial interleaved group, and ranges
    // that split one); token counts cover every tile size and a second group.
    for ty in [WeightType::Q4_1, WeightType::Q8_0] {
        for &(rows, cols) in &[(37, 576), (20, 96), (33, 1536)] {
            let raw = random_ggml(&mut rng, ty, rows, cols);
            let matrix = |level| QMatrix::from_ggml_for(level, ty, rows, cols, &raw).unwrap();
            let scalar = matrix(Level::Scalar);
            // Each level with the layout it loads; x86 levels also with the
            // block layout (which they hand to the scalar kernels).
            let mut cases: Vec<(Level, QMatrix)> =
                levels[1..].iter().map(|&l| (l, matrix(l))).collect();
            for &l in levels
                .iter()
                .filter(|l| matches!(l, Level::Avx2 | Level::AvxVnni | Level::Avx512))
            {
                cases.push((l, matrix(Level::Scalar)));
            }
            for t in [1, 2, 3, 4, 7, 70] {
                let x = random_f32(&mut rng, t * cols, 3.0);
                let mut acts = QActs::default();
                acts.quantize(&x, t, cols);
                let want = run(Level::Scalar, &scalar, &acts);
                for (level, w) in &cases {
                    let got = run(*level, w, &acts);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        let tol = 1e-4 * (1.0 + e.abs());
                        assert!(
                            (g - e).abs() <= tol,
                            "{level:?} {:?} {ty:?} {rows}x{cols} t={t} [{i}]: {g} vs scalar {e}",
                            w.layout
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn quantized_activations_match_candle() {
    let mut rng = StdRng::seed_from_u64(11);
    let (t, k) = (5, 576);
    let mut x = random_f32(&mut rng, t * k, 4.0);
    // A zero block and tiny values (f16 subnormal scales).
    x[..32].fill(0.0);
    for v in &mut x[32..64] {
        *v *= 1e-4;
    }
    let mut acts = QActs::default();
    acts.quantize(&x, t, k);
    let tensor = Tensor::from_vec(x, (t, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&tensor, GgmlDType::Q8_1).unwrap();
    let raw = q.data().unwrap();
    let nb = k / QK;
    for ti in 0..t {
        for b in 0..nb {
            let blk = &raw[(ti * nb + b) * 36..(ti * nb + b + 1) * 36];
            let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let s = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            assert_eq!(d.to_bits(), acts.token_d(ti)[b].to_bits(), "d of {ti}/{b}");
            assert_eq!(s.to_bits(), acts.token_s(ti)[b].to_bits(), "s of {ti}/{b}");
            let qs: Vec<i8> = blk[4..].iter().map(|&v| v as i8).collect();
            assert_eq!(&qs[..], &acts.token_qs(ti)[b * QK..(b + 1) * QK]);
            let sum: i32 = qs.iter().map(|&q| q as i32).sum();
            assert_eq!(sum, acts.sums[ti * nb + b], "sum of {ti}/{b}");
        }
    }
}

/// Every level's quantizer gives the scalar quantizer's bytes, ties and
/// all-zero blocks included.
#[test]
fn quantizers_match_scalar() {
    let mut rng = StdRng::seed_from_u64(13);
    let (t, k) = (3, 256);
    let mut x = random_f32(&mut rng, t * k, 2.0);
    // Exact halves after scaling by 127 / 127.0: ties must round away from zero.
    for (i, v) in x[..64].iter_mut().enumerate() {
        *v = (i as f32 - 32.0) + 0.5;
    }
    x[31] = 127.0;
    x[32 + 31] = -127.0;
    // A block of zeros (d = 0).
    x[k + 64..k + 96].fill(0.0);
    let mut want = QActs::default();
    want.quantize_at(Level::Scalar, &x, t, k);
    for &level in &supported_levels() {
        let mut got = QActs::default();
        got.quantize_at(level, &x, t, k);
        assert_eq!(want.qs, got.qs, "{level:?}");
        assert_eq!(want.d, got.d, "{level:?}");
        assert_eq!(want.s, got.s, "{level:?}");
        assert_eq!(want.sums, got.sums, "{level:?}");
    }
}

/// The KV cache's f16 writes round as the software conversion does.
#[test]
fn f16_writes_match_software() {
    let mut rng = StdRng::seed_from_u64(29);
    let mut x = random_f32(&mut rng, 1000, 70000.0);
    x.extend([
        0.0,
        -0.0,
        1e-7,
        -3e-5,
        65504.0,
        65519.0,
        65520.0,
        -1e9,
        f32::INFINITY,
    ]);
    x.extend(random_f32(&mut rng, 37, 1e-3));
    let mut got = F16Buf::zeros(1);
    got.extend_f32(&x);
    let got = got.as_slice();
    assert_eq!(got[0], 0);
    assert_eq!(got.as_ptr() as usize % 64, 0, "not on a cache line");
    for (i, (&g, &v)) in got[1..].iter().zip(&x).enumerate() {
        assert_eq!(g, f32_to_f16(v), "[{i}] {v}");
    }
}

#[test]
fn f16_round_trips_like_half() {
    // Every f16 converts to f32 and back unchanged (NaNs aside).
    for h in 0..=u16::MAX {
        let f = f16_to_f32(h);
        if f.is_nan() {
            continue;
        }
        assert_eq!(f32_to_f16(f), h, "{h:#x} -> {f}");
    }
    // Ties round to even; overflow saturates to infinity.
    assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
    assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
    assert_eq!(f32_to_f16(1e6), 0x7c00);
    assert_eq!(f32_to_f16(1e-9), 0);
}

#[test]
fn scalar_matmul_matches_candle() {
    let mut rng = StdRng::seed_from_u64(3);
    let (rows, cols, t) = (48, 576, 3);
    for (ty, gty) in [
        (WeightType::Q4_1, GgmlDType::Q4_1),
        (WeightType::Q8_0, GgmlDType::Q8_0),
    ] {
        let wf = random_f32(&mut rng, rows * cols, 0.1);
        let wt = Tensor::from_vec(wf, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, gty).unwrap();
        let raw = q.data().unwrap();
        let w = QMatrix::from_ggml_for(Level::Scalar, ty, rows, cols, &raw).unwrap();
        // Dequantization matches too, in either layout.
        let deq = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let rows16 = QMatrix::from_ggml_for(Level::Avx512, ty, rows, cols, &raw).unwrap();
        assert_eq!(rows16.layout, Layout::Rows16);
        let mut row = vec![0f32; cols];
        for m in [&w, &rows16] {
            for (r, want) in deq.iter().enumerate() {
                m.dequantize_row(r, &mut row);
                assert_eq!(&row, want, "{ty:?} {:?} row {r}", m.layout);
            }
        }
        let x = random_f32(&mut rng, t * cols, 2.0);
        let xt = Tensor::from_vec(x.clone(), (t, cols), &Device::Cpu).unwrap();
        let want = QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&xt)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut acts = QActs::default();
        acts.quantize(&x, t, cols);
        let got = run(Level::Scalar, &w, &acts);
        for ti in 0..t {
            for r in 0..rows {
                let (g, e) = (got[ti * rows + r], want[ti][r]);
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{ty:?} [{ti}][{r}]: {g} vs candle {e}"
                );
            }
        }
    }
}

#[test]
fn f32_helpers_match_scalar() {
    let mut rng = StdRng::seed_from_u64(5);
    for n in [1, 15, 16, 64, 100] {
        let a = random_f32(&mut rng, n, 1.0);
        let b = random_f32(&mut rng, n, 1.0);
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - want).abs() < 1e-4);
        let mut y = b.clone();
        axpy_f32(&mut y, 0.5, &a);
        for i in 0..n {
            assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
        }
    }
}

/// SwiGLU's gate at every level against f64, over lengths that end inside and
/// on 16-value blocks and gates from deep in both tails (where `e^-x`
/// overflows or vanishes).
#[test]
fn silu_mul_matches_f64() {
    let mut rng = StdRng::seed_from_u64(19);
    for &level in &supported_levels() {
        for n in [1, 15, 16, 33, 1536] {
            let mut g = random_f32(&mut rng, n, 12.0);
            g[0] = -200.0;
            if n > 1 {
                g[1] = 200.0;
            }
            let u = random_f32(&mut rng, n, 3.0);
            let want: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64)
                .collect();
            silu_mul_at(level, &mut g, &u);
            for (i, (got, want)) in g.iter().zip(&want).enumerate() {
                assert!(
                    (*got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{level:?} n={n} [{i}]: {got} vs {want}"
                );
            }
        }
    }
}

/// A softmax's weights at every level against f64: lengths that end inside
/// and on 16-value blocks, temperatures that scale logits far into the
/// exponential's underflow, and ruled-out tokens (−∞) that must weigh 0.
#[test]
fn exp_shifted_matches_f64() {
    let mut rng = StdRng::seed_from_u64(23);
    for &level in &supported_levels() {
        for n in [1, 15, 16, 33, 49152] {
            for scale in [1.0f32, 1.0 / 0.05, 0.5] {
                let mut x = random_f32(&mut rng, n, 20.0);
                if n > 1 {
                    x[n / 2] = f32::NEG_INFINITY;
                }
                let shift = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut out = vec![f32::NAN; n];
                exp_shifted_at(level, &x, shift, scale, &mut out);
                for (i, (&got, &x)) in out.iter().zip(&x).enumerate() {
                    let arg = (x as f64 - shift as f64) * scale as f64;
                    let want = arg.exp();
                    if x == f32::NEG_INFINITY {
                        assert_eq!(got, 0.0, "{level:?} n={n} [{i}]");
                    } else {
                        assert!(
                            // The argument is rounded to f32 first: a relative
                            // error of |arg|·2^-23 is the input's own.
                            (got as f64 - want).abs() <= (2e-6 + arg.abs() * 1.2e-7) * want + 1e-37,
                            "{level:?} n={n} scale={scale} [{i}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// Every level's attention against softmax in f64, for grouped heads and
/// lengths that end inside and on 16-position blocks (and with each of the
/// AVX2 scores' four-position steps' remainders, 0 to 3); very negative
/// scores exercise the exponential's underflow.
#[test]
fn attention_matches_naive_softmax() {
    let mut rng = StdRng::seed_from_u64(17);
    for &level in &supported_levels() {
        for (hd, group, n, spread) in [
            (64, 1, 37, 1.0),
            (64, 3, 48, 1.0),
            (64, 3, 5, 1.0),
            (64, 3, 3, 1.0),
            (64, 2, 38, 1.0),
            (64, 3, 7, 40.0),
            (64, 4, 100, 1.0),
            (64, 5, 37, 1.0),
            (64, 3, 40, 40.0),
            (32, 1, 37, 1.0),
            (32, 3, 20, 1.0),
        ] {
            let (stride, off) = (3 * hd, hd);
            let q = random_f32(&mut rng, group * hd, spread);
            let keys = random_f16(&mut rng, n * stride);
            let values = random_f16(&mut rng, n * stride);
            let scale = 1.0 / (hd as f32).sqrt();
            let mut scores = vec![0f32; group * n];
            let mut out = vec![0f32; group * hd];
            let mut lse = vec![0f32; group];
            attend_at(
                level,
                hd,
                &q,
                &keys,
                &values,
                stride,
                off,
                scale,
                &mut scores,
                &mut out,
                &mut lse,
            );
            for h in 0..group {
                let qh = &q[h * hd..(h + 1) * hd];
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|d| qh[d] as f64 * f16_to_f32(keys[j * stride + off + d]) as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let want_lse = max + sum.ln();
                assert!(
                    (lse[h] as f64 - want_lse).abs() < 1e-5 * want_lse.abs().max(1.0),
                    "{level:?} hd {hd} group {group} n {n} head {h} log-sum-exp: {} vs {want_lse}",
                    lse[h]
                );
                for d in 0..hd {
                    let want: f64 = (0..n)
                        .map(|j| e[j] / sum * f16_to_f32(values[j * stride + off + d]) as f64)
                        .sum();
                    assert!(
                        (out[h * hd + d] as f64 - want).abs() < 1e-5,
                        "{level:?} hd {hd} group {group} n {n} head {h} [{d}]: {} vs {want}",
                        out[h * hd + d]
                    );
                }
            }
        }
    }
}

/// A group's heads attended together give, bit for bit, what each head gives
/// alone, at every level: grouping only changes which loads are shared.
#[test]
fn grouped_attention_equals_one_head_at_a_time() {
    let mut rng = StdRng::seed_from_u64(23);
    let (hd, group, n) = (64, 3, 50);
    let stride = 3 * hd;
    let q = random_f32(&mut rng, group * hd, 1.0);
    let keys = random_f16(&mut rng, n * stride);
    let values = random_f16(&mut rng, n * stride);
    for &level in &supported_levels() {
        let mut scores = vec![0f32; group * n];
        let mut together = vec![0f32; group * hd];
        let mut lse = vec![0f32; group];
        attend_at(
            level,
            hd,
            &q,
            &keys,
            &values,
            stride,
            0,
            0.125,
            &mut scores,
            &mut together,
            &mut lse,
        );
        for h in 0..group {
            let mut alone = vec![0f32; hd];
            let mut alone_lse = [0f32];
            let range = h * hd..(h + 1) * hd;
            attend_at(
                level,
                hd,
                &q[range.clone()],
                &keys,
                &values,
                stride,
                0,
                0.125,
                &mut scores[..n],
                &mut alone,
                &mut alone_lse,
            );
            assert_eq!(alone, together[range], "{level:?} head {h}");
            assert_eq!(alone_lse[0], lse[h], "{level:?} head {h}");
        }
    }
}

/// Attention over stretches of the positions, merged by their log-sum-exps,
/// is attention over all of them (up to rounding), at every level.
#[test]
fn attention_over_merged_stretches_equals_the_whole() {
    let mut rng = StdRng::seed_from_u64(31);
    let (hd, group, n, stride) = (64, 3, 300, 3 * 64);
    let q = random_f32(&mut rng, group * hd, 4.0);
    let keys = random_f16(&mut rng, n * stride);
    let values = random_f16(&mut rng, n * stride);
    for &level in &supported_levels() {
        // Attention over positions j0..j1: (outputs, log-sum-exps).
        let stretch = |j0: usize, j1: usize| {
            let mut scores = vec![0f32; group * (j1 - j0)];
            let (mut out, mut lse) = (vec![0f32; group * hd], vec![0f32; group]);
            let (k, v) = (&keys[j0 * stride..], &values[j0 * stride..]);
            attend_at(
                level,
                hd,
                &q,
                k,
                v,
                stride,
                hd,
                0.125,
                &mut scores,
                &mut out,
                &mut lse,
            );
            (out, lse)
        };
        let (whole, _) = stretch(0, n);
        for cuts in [
            vec![0, 150, 300],
            vec![0, 1, 299, 300],
            vec![0, 100, 200, 300],
        ] {
            let (outs, lses): (Vec<_>, Vec<_>) =
                cuts.windows(2).map(|w| stretch(w[0], w[1])).unzip();
            let outs: Vec<&[f32]> = outs.iter().map(Vec::as_slice).collect();
            let lses: Vec<&[f32]> = lses.iter().map(Vec::as_slice).collect();
            let mut merged = vec![0f32; group * hd];
            merge_attention(hd, &outs, &lses, &mut merged);
            for (d, (&m, &w)) in merged.iter().zip(&whole).enumerate() {
                assert!(
                    (m - w).abs() < 1e-5,
                    "{level:?} cuts {cuts:?} [{d}]: {m} vs {w}"
                );
            }
        }
    }
}

/// The KV cache's storage keeps its values through the ways a cache changes:
/// appends after a rollback into the middle of a line, and prefix copies.
#[test]
fn f16_buffers_append_truncate_and_copy() {
    let x: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let mut buf = F16Buf::zeros(0);
    buf.extend_f32(&x[..40]);
    buf.truncate(33);
    buf.extend_f32(&x[33..100]);
    let want: Vec<u16> = x.iter().map(|&v| f32_to_f16(v)).collect();
    assert_eq!(buf.as_slice(), &want[..]);
    let head = buf.prefix(65);
    assert_eq!(head.as_slice(), &want[..65]);
    assert_eq!(head.as_slice().as_ptr() as usize % 64, 0);
    assert!(head.capacity_bytes() >= 65 * 2);
}

/// A matmul's pieces cover every grain once, in order, none over the cap,
/// shrinking toward the end to single grains.
#[test]
fn pieces_cover_the_grains_and_shrink_at_the_end() {
    for (grains, threads, cap) in [
        (60, 2, 7),
        (3072, 2, 384),
        (5, 4, 1),
        (1, 2, 1),
        (100, 8, 3),
    ] {
        let next = AtomicUsize::new(0);
        let pieces: Vec<Range<usize>> =
            std::iter::from_fn(|| next_piece(&next, grains, threads, cap)).collect();
        let mut at = 0;
        for p in &pieces {
            assert_eq!(p.start, at, "{grains} grains: {pieces:?}");
            assert!((1..=cap).contains(&p.len()), "{grains} grains: {pieces:?}");
            at = p.end;
        }
        assert_eq!(at, grains);
        assert_eq!(
            pieces.last().unwrap().len(),
            1,
            "{grains} grains: {pieces:?}"
        );
        assert!(pieces.windows(2).all(|w| w[1].len() <= w[0].len()));
    }
}
