//! Two-sample statistics for `compare` and the baseline gate: the Mann–Whitney U test, the
//! two-sample Kolmogorov–Smirnov test, and a Hodges–Lehmann confidence interval for the shift.
//!
//! Written here rather than taken from a crate: `statrs` 0.19 has a Mann–Whitney U (exact only
//! without ties) but no two-sample Kolmogorov–Smirnov and pulls nalgebra by default; the
//! smaller crates (hypors, rustats) give only the normal approximation, which is wrong at the
//! 5–9 rounds a comparison has. Both tests here are exact for small samples (the null
//! distribution counted by dynamic programming), asymptotic for large ones. Every function is
//! deterministic: the same rounds give the same p and interval.

/// The result of a two-sided test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// U (the smaller of U₁, U₂) or D.
    pub statistic: f64,
    /// Two-sided p-value in [0, 1].
    pub p: f64,
    /// True when p came from the exact null distribution.
    pub exact: bool,
}

/// Largest n₁·n₂ for which the exact distributions are counted (counting is O(n₁·n₂·(n₁+n₂))).
const EXACT_LIMIT: usize = 2_500;

/// Midranks (1-based) of `all`, and the sizes of the groups of tied values.
fn midranks(all: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&i, &j| all[i].total_cmp(&all[j]));
    let mut ranks = vec![0.0; all.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && all[order[j]] == all[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share the mean of ranks i+1..=j.
        let rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        if j - i > 1 {
            ties.push(j - i);
        }
        i = j;
    }
    (ranks, ties)
}

/// How many of the C(n₁+n₂, n₁) arrangements give each U = 0 ..= n₁·n₂ (no ties), by the
/// recurrence f(m, n, u) = f(m−1, n, u−n) + f(m, n−1, u) (Mann & Whitney 1947). Counts as f64:
/// exact up to 2⁵³ (all rounds counts a comparison has), within 1e-15 relative beyond.
pub fn u_distribution(n1: usize, n2: usize) -> Vec<f64> {
    // table[n][u] for the current m; start with m = 0: one arrangement, U = 0.
    let max = n1 * n2;
    let mut prev: Vec<Vec<f64>> = (0..=n2)
        .map(|_| {
            let mut v = vec![0.0; max + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    for _m in 1..=n1 {
        let mut cur: Vec<Vec<f64>> = vec![vec![0.0; max + 1]; n2 + 1];
        // n = 0: the m values of the first sample exceed nothing: U = 0 once.
        cur[0][0] = 1.0;
        for n in 1..=n2 {
            for u in 0..=max {
                // The largest value belongs to the first sample (it exceeds all n of the
                // second: u − n from the rest) or to the second (adds nothing).
                let a = if u >= n { prev[n][u - n] } else { 0.0 };
                cur[n][u] = a + cur[n - 1][u];
            }
        }
        prev = cur;
    }
    prev.swap_remove(n2)
}

fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (W. J. Cody's rational approximations via the
/// Numerical Recipes `erfcc` form; relative error < 1.2e-7, ample for a p-value).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Two-sided Mann–Whitney U test of `a` against `b`. Exact when there are no ties and the
/// samples are small; otherwise the normal approximation with the tie-corrected variance and
/// a continuity correction (as scipy.stats.mannwhitneyu's "asymptotic" method).
/// None when a sample is empty or holds a non-finite value.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let (ranks, ties) = midranks(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let u2 = (n1 * n2) as f64 - u1;
    let u = u1.min(u2);
    if ties.is_empty() && n1 * n2 <= EXACT_LIMIT {
        let dist = u_distribution(n1, n2);
        let total: f64 = dist.iter().sum();
        // U has no ties here, so it is a whole number.
        let k = u.round() as usize;
        let tail: f64 = dist[..=k].iter().sum();
        return Some(TestResult {
            statistic: u,
            p: (2.0 * tail / total).min(1.0),
            exact: true,
        });
    }
    let n = (n1 + n2) as f64;
    let (f1, f2) = (n1 as f64, n2 as f64);
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
    let var = f1 * f2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        // Every value equal: nothing tells the samples apart.
        return Some(TestResult {
            statistic: u,
            p: 1.0,
            exact: false,
        });
    }
    let mean = f1 * f2 / 2.0;
    let z = ((u2.max(u1) - mean - 0.5).max(0.0)) / var.sqrt();
    Some(TestResult {
        statistic: u,
        p: (2.0 * normal_sf(z)).min(1.0),
        exact: false,
    })
}

/// The two-sample statistic D = sup |F_a − F_b|.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    d
}

/// P(D ≥ d) under the null for samples of n₁ and n₂ without ties, by counting the lattice
/// paths from (0,0) to (n₁,n₂) that stay strictly inside |i/n₁ − j/n₂| < d (Hodges 1957).
/// With ties the observed D can only be smaller than on the untied path, so this p is
/// conservative (the same choice scipy.stats.ks_2samp's exact method makes).
pub fn ks_exact_sf(d: f64, n1: usize, n2: usize) -> f64 {
    // Compare in integers: |i·n₂ − j·n₁| < d·n₁·n₂, with a tolerance for d's rounding.
    let bound = d * (n1 * n2) as f64 - 1e-7;
    let inside = |i: usize, j: usize| ((i * n2) as f64 - (j * n1) as f64).abs() < bound;
    // row[j] after row i = the number of paths from (0,0) to (i, j) that stay inside.
    let mut row = vec![0.0f64; n2 + 1];
    row[0] = 1.0;
    for j in 1..=n2 {
        row[j] = if inside(0, j) { row[j - 1] } else { 0.0 };
    }
    for i in 1..=n1 {
        let mut next = vec![0.0f64; n2 + 1];
        next[0] = if inside(i, 0) { row[0] } else { 0.0 };
        for j in 1..=n2 {
            next[j] = if inside(i, j) {
                row[j] + next[j - 1]
            } else {
                0.0
            };
        }
        row = next;
    }
    // row[n2] counts inside paths; divide by C(n₁+n₂, n₁).
    let total = binomial(n1 + n2, n1);
    (1.0 - row[n2] / total).clamp(0.0, 1.0)
}

fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Kolmogorov's limiting distribution: P(K > x) = 2 Σ (−1)^(k−1) e^(−2k²x²).
fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as i64 % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Two-sided two-sample Kolmogorov–Smirnov test. Exact (path counting) for small samples,
/// else Kolmogorov's distribution with Stephens' small-sample correction
/// (√n_e + 0.12 + 0.11/√n_e)·D. None when a sample is empty or holds a non-finite value.
pub fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let d = ks_statistic(a, b);
    if d == 0.0 {
        return Some(TestResult {
            statistic: 0.0,
            p: 1.0,
            exact: true,
        });
    }
    if n1 * n2 <= EXACT_LIMIT {
        return Some(TestResult {
            statistic: d,
            p: ks_exact_sf(d, n1, n2),
            exact: true,
        });
    }
    let en = ((n1 * n2) as f64 / (n1 + n2) as f64).sqrt();
    Some(TestResult {
        statistic: d,
        p: kolmogorov_sf((en + 0.12 + 0.11 / en) * d),
        exact: false,
    })
}

/// The largest k with P(U ≤ k) ≤ alpha/2 under the exact null for n₁, n₂ (no ties), or None
/// when even U = 0 is more likely than that (the samples are too small for this confidence).
pub fn u_lower_critical(n1: usize, n2: usize, alpha: f64) -> Option<usize> {
    if n1 * n2 > EXACT_LIMIT {
        // Normal approximation of the same quantile.
        let mean = (n1 * n2) as f64 / 2.0;
        let sd = ((n1 * n2 * (n1 + n2 + 1)) as f64 / 12.0).sqrt();
        let z = normal_quantile_upper(alpha / 2.0);
        let k = (mean - z * sd - 0.5).floor();
        return (k >= 0.0).then_some(k as usize);
    }
    let dist = u_distribution(n1, n2);
    let total: f64 = dist.iter().sum();
    let mut cum = 0.0;
    let mut last = None;
    for (k, c) in dist.iter().enumerate() {
        cum += c;
        if cum / total <= alpha / 2.0 + 1e-12 {
            last = Some(k);
        } else {
            break;
        }
    }
    last
}

/// z with P(Z > z) = p, by bisection on the survival function (p in (0, 0.5]).
fn normal_quantile_upper(p: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if normal_sf(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// The Hodges–Lehmann estimate of the shift b − a (the median of all n₁·n₂ differences) and
/// its distribution-free confidence interval at `confidence`: the (k+1)-th smallest and
/// largest differences, k the Mann–Whitney lower critical value (Hollander & Wolfe,
/// *Nonparametric Statistical Methods*, §4.3). The interval is unbounded (±∞) when the
/// samples are too small for that confidence. None for an empty or non-finite sample.
pub fn hodges_lehmann(a: &[f64], b: &[f64], confidence: f64) -> Option<(f64, f64, f64)> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let mut diffs: Vec<f64> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| y - x))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let estimate = median_sorted(&diffs);
    let (lo, hi) = match u_lower_critical(n1, n2, 1.0 - confidence) {
        Some(k) => (diffs[k], diffs[diffs.len() - 1 - k]),
        None => (f64::NEG_INFINITY, f64::INFINITY),
    };
    Some((estimate, lo, hi))
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median (NaN for an empty sample).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    median_sorted(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of n₁ and n₂ whose smaller U is exactly `u`: a₁…a_{n₁} placed so that the
    /// first sample's values exceed `u` of the second's in total.
    fn with_u(n1: usize, n2: usize, u: usize) -> (Vec<f64>, Vec<f64>) {
        // Start fully separated (all a below all b: U₁ = 0) and move the largest a's up past
        // b's one at a time.
        let mut above = vec![0usize; n1]; // how many b's each a exceeds
        let mut left = u;
        for slot in above.iter_mut().rev() {
            let take = left.min(n2);
            *slot = take;
            left -= take;
        }
        assert_eq!(left, 0);
        let b: Vec<f64> = (0..n2).map(|j| (j as f64 + 1.0) * 10.0).collect();
        let a: Vec<f64> = above
            .iter()
            .enumerate()
            .map(|(i, &k)| k as f64 * 10.0 + 1.0 + i as f64 * 0.01)
            .collect();
        (a, b)
    }

    /// Critical values of U for a two-tailed test (reject when U ≤ the value), from the
    /// standard table (e.g. Zar, *Biostatistical Analysis*, 5th ed., Table B.11; the same
    /// values in every textbook table): n₁ = n₂ = 5: 2 at α = 0.05, 0 at 0.01; n₁ = n₂ = 8:
    /// 13 and 7; n₁ = n₂ = 10: 23 and 16; n₁ = 6, n₂ = 9: 10 and 5.
    #[test]
    fn mann_whitney_matches_the_published_critical_values() {
        for (n1, n2, alpha, crit) in [
            (5, 5, 0.05, 2),
            (5, 5, 0.01, 0),
            (8, 8, 0.05, 13),
            (8, 8, 0.01, 7),
            (10, 10, 0.05, 23),
            (10, 10, 0.01, 16),
            (6, 9, 0.05, 10),
            (6, 9, 0.01, 5),
        ] {
            let (a, b) = with_u(n1, n2, crit);
            let at = mann_whitney(&a, &b).unwrap();
            assert!(at.exact);
            assert_eq!(at.statistic, crit as f64);
            assert!(at.p <= alpha, "{n1},{n2} U={crit}: p {} > {alpha}", at.p);
            let (a, b) = with_u(n1, n2, crit + 1);
            let above = mann_whitney(&a, &b).unwrap();
            assert!(
                above.p > alpha,
                "{n1},{n2} U={}: p {} ≤ {alpha}",
                crit + 1,
                above.p
            );
            assert_eq!(u_lower_critical(n1, n2, alpha), Some(crit));
        }
    }

    /// scipy.stats.mannwhitneyu's documented example (Conover's male/female ages): U = 17,
    /// exact two-sided p = 0.1111, asymptotic p = 0.1113.
    #[test]
    fn mann_whitney_matches_scipys_example() {
        let male = [19.0, 22.0, 16.0, 29.0, 24.0];
        let female = [20.0, 11.0, 17.0, 12.0];
        let r = mann_whitney(&male, &female).unwrap();
        assert_eq!(r.statistic, 3.0);
        assert!((r.p - 0.111_111_111).abs() < 1e-6, "{}", r.p);
        // A tie forces the normal approximation: [1,2,3] vs [3,4,5], scipy gives p = 0.1212.
        let t = mann_whitney(&[1.0, 2.0, 3.0], &[3.0, 4.0, 5.0]).unwrap();
        assert!(!t.exact);
        assert!((t.p - 0.121_183_4).abs() < 1e-4, "{}", t.p);
    }

    #[test]
    fn mann_whitney_of_identical_values_is_p_one_and_bad_input_is_none() {
        let r = mann_whitney(&[2.0; 5], &[2.0; 5]).unwrap();
        assert_eq!(r.p, 1.0);
        assert!(mann_whitney(&[], &[1.0]).is_none());
        assert!(mann_whitney(&[f64::NAN], &[1.0]).is_none());
        assert!(kolmogorov_smirnov(&[1.0], &[f64::INFINITY]).is_none());
    }

    /// Equal samples of n have the closed form P(D ≥ k/n) = 2 Σ_{i≥1} (−1)^{i+1}
    /// C(2n, n−ik) / C(2n, n) (Gnedenko & Korolyuk 1951). The critical values it gives are
    /// Massey's table (J. Amer. Statist. Assoc. 47, 1952, Table 1, two-sided): n = 5: K = 5
    /// at both 0.05 and 0.01; n = 10: K = 7 at 0.05, 8 at 0.01; n = 8: K = 6 at 0.05, 7 at
    /// 0.01.
    #[test]
    fn kolmogorov_smirnov_matches_the_exact_tables() {
        let closed = |n: usize, k: usize| -> f64 {
            let mut s = 0.0;
            let mut i = 1;
            while i * k <= n {
                let term = binomial(2 * n, n - i * k);
                s += if i % 2 == 1 { term } else { -term };
                i += 1;
            }
            2.0 * s / binomial(2 * n, n)
        };
        for n in [5usize, 8, 10] {
            for k in 1..=n {
                let p = ks_exact_sf(k as f64 / n as f64, n, n);
                assert!((p - closed(n, k).min(1.0)).abs() < 1e-9, "n={n} k={k}: {p}");
            }
        }
        for (n, alpha, k) in [
            (5, 0.05, 5),
            (5, 0.01, 5),
            (8, 0.05, 6),
            (8, 0.01, 7),
            (10, 0.05, 7),
            (10, 0.01, 8),
        ] {
            assert!(
                ks_exact_sf(k as f64 / n as f64, n, n) <= alpha,
                "n={n} K={k}"
            );
            assert!(
                ks_exact_sf((k - 1) as f64 / n as f64, n, n) > alpha,
                "n={n} K={}",
                k - 1
            );
        }
        // Two fully separated samples of 5: D = 1, p = 2/252.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let r = kolmogorov_smirnov(&a, &b).unwrap();
        assert_eq!(r.statistic, 1.0);
        assert!((r.p - 2.0 / 252.0).abs() < 1e-12);
    }

    /// The large-sample critical values c(α)·√((n₁+n₂)/(n₁n₂)), c = 1.36 at 0.05 and 1.63 at
    /// 0.01 (Smirnov 1948; the footnote of Massey's table).
    #[test]
    fn kolmogorov_smirnov_asymptotic_matches_smirnovs_coefficients() {
        assert!((kolmogorov_sf(1.358) - 0.05).abs() < 1e-3);
        assert!((kolmogorov_sf(1.628) - 0.01).abs() < 1e-3);
        // 60 vs 60 values is past the exact limit: the asymptotic path.
        let a: Vec<f64> = (0..60).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..60).map(|i| i as f64 + 20.5).collect();
        let r = kolmogorov_smirnov(&a, &b).unwrap();
        assert!(!r.exact);
        assert!((r.statistic - 21.0 / 60.0).abs() < 1e-12);
        assert!(r.p < 0.01 && r.p > 0.0005, "{}", r.p);
    }

    /// Hollander & Wolfe's interval: for 5 + 5 at 95 % the limits are the 3rd smallest and
    /// 3rd largest of the 25 differences (k = 2, the critical U above).
    #[test]
    fn hodges_lehmann_interval_uses_the_critical_order_statistics() {
        let a = [10.0, 11.0, 12.0, 13.0, 14.0];
        let b = [20.0, 21.0, 22.0, 23.0, 24.0];
        let (est, lo, hi) = hodges_lehmann(&a, &b, 0.95).unwrap();
        assert_eq!(est, 10.0);
        // Differences 6..=14 with multiplicities 1,2,3,4,5,4,3,2,1: the 3rd is 7, the 23rd 13.
        assert_eq!((lo, hi), (7.0, 13.0));
        // Two against two cannot give 95 %: unbounded.
        let (_, lo, hi) = hodges_lehmann(&[1.0, 2.0], &[3.0, 4.0], 0.95).unwrap();
        assert!(lo.is_infinite() && hi.is_infinite());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn u_distribution_sums_to_the_binomial() {
        for (m, n) in [(1, 1), (3, 4), (5, 5), (9, 9)] {
            let d = u_distribution(m, n);
            assert_eq!(d.iter().sum::<f64>(), binomial(m + n, m));
            // Symmetric about m·n/2.
            for u in 0..=m * n {
                assert_eq!(d[u], d[m * n - u]);
            }
        }
    }
}
