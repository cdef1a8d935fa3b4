//! Queueing-theory formulas the validation tests hold the simulator to (des.md §6): Erlang B
//! and C, M/M/c waiting times and quantiles, M/M/c/K blocking, Little's law helpers, and the
//! closed machine-repairman model. Pure functions of rates; units are whatever `lambda` and `mu`
//! use (per second in the tests).
//!
//! These never simulate anything; they are the yardstick.

/// Erlang B blocking probability of an M/M/c/c loss system with offered load `a = λ/μ`, by the
/// numerically stable recursion B(0) = 1, B(k) = a·B(k−1) / (k + a·B(k−1)).
pub fn erlang_b(c: u32, a: f64) -> f64 {
    (1..=c).fold(1.0, |b, k| a * b / (f64::from(k) + a * b))
}

/// Erlang C: probability that an arrival waits in an M/M/c queue (`a = λ/μ`, needs `a < c`).
/// C = B / (1 − ρ(1 − B)).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    let rho = a / f64::from(c);
    let b = erlang_b(c, a);
    b / (1.0 - rho * (1.0 - b))
}

/// The stationary M/M/c queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mmc {
    /// Arrival rate λ.
    pub lambda: f64,
    /// Service rate μ of one server.
    pub mu: f64,
    /// Servers.
    pub c: u32,
}

impl Mmc {
    /// Offered load a = λ/μ.
    pub fn load(&self) -> f64 {
        self.lambda / self.mu
    }
    /// Utilisation ρ = λ/(cμ).
    pub fn rho(&self) -> f64 {
        self.load() / f64::from(self.c)
    }
    /// Probability of waiting (Erlang C).
    pub fn p_wait(&self) -> f64 {
        erlang_c(self.c, self.load())
    }
    /// Mean wait in queue Wq = C / (cμ − λ).
    pub fn wq(&self) -> f64 {
        self.p_wait() / (f64::from(self.c) * self.mu - self.lambda)
    }
    /// Mean time in system W = Wq + 1/μ.
    pub fn w(&self) -> f64 {
        self.wq() + 1.0 / self.mu
    }
    /// Mean queue length Lq = λ·Wq (Little).
    pub fn lq(&self) -> f64 {
        self.lambda * self.wq()
    }
    /// Standard deviation of the wait in queue: Wq is 0 with probability 1−C and Exp(cμ−λ)
    /// otherwise, so `E[Wq²] = 2C/(cμ−λ)²`.
    pub fn wq_stddev(&self) -> f64 {
        let r = f64::from(self.c) * self.mu - self.lambda;
        let m2 = 2.0 * self.p_wait() / (r * r);
        (m2 - self.wq().powi(2)).max(0.0).sqrt()
    }
    /// p-quantile of the wait in queue: ln(C/(1−p)) / (cμ−λ) if C > 1−p, else 0.
    pub fn wq_quantile(&self, p: f64) -> f64 {
        let c = self.p_wait();
        if c > 1.0 - p {
            (c / (1.0 - p)).ln() / (f64::from(self.c) * self.mu - self.lambda)
        } else {
            0.0
        }
    }
}

/// The M/M/c/K queue: c servers, at most K customers in the system (K ≥ c); arrivals that find
/// K present are blocked (the simulator's bounded station queue sheds them with 429/503).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mmck {
    /// Arrival rate λ.
    pub lambda: f64,
    /// Service rate μ of one server.
    pub mu: f64,
    /// Servers.
    pub c: u32,
    /// Capacity: customers in the system at most (waiting + in service), K ≥ c.
    pub k: u32,
}

impl Mmck {
    /// Stationary probabilities p_0..=p_K.
    pub fn probabilities(&self) -> Vec<f64> {
        let a = self.lambda / self.mu;
        let c = f64::from(self.c);
        let mut terms = Vec::with_capacity(self.k as usize + 1);
        let mut t = 1.0;
        terms.push(t);
        for n in 1..=self.k {
            t *= if n <= self.c { a / f64::from(n) } else { a / c };
            terms.push(t);
        }
        let sum: f64 = terms.iter().sum();
        terms.iter().map(|x| x / sum).collect()
    }
    /// Blocking probability p_K.
    pub fn p_block(&self) -> f64 {
        *self.probabilities().last().unwrap_or(&0.0)
    }
    /// Effective (admitted) arrival rate λ(1 − p_K).
    pub fn lambda_eff(&self) -> f64 {
        self.lambda * (1.0 - self.p_block())
    }
    /// Mean queue length Lq = Σ_{n>c} (n−c)·p_n.
    pub fn lq(&self) -> f64 {
        let p = self.probabilities();
        p.iter()
            .enumerate()
            .skip(self.c as usize + 1)
            .map(|(n, pn)| (n - self.c as usize) as f64 * pn)
            .sum()
    }
    /// Mean wait in queue of admitted customers Wq = Lq / λ_eff.
    pub fn wq(&self) -> f64 {
        self.lq() / self.lambda_eff()
    }
    /// Mean time in system of admitted customers W = Wq + 1/μ.
    pub fn w(&self) -> f64 {
        self.wq() + 1.0 / self.mu
    }
}

/// The closed M/M/c//N machine-repairman system: N customers each think for Exp(Z) and then ask
/// c servers for Exp(S) service. Returns (throughput X, response time R = N/X − Z).
pub fn closed_mmc(n: u32, c: u32, s: f64, z: f64) -> (f64, f64) {
    // p_n ∝ N!/(N−n)! · (S/Z)^n / (n! if n ≤ c else c!·c^(n−c)); build the terms by ratios.
    let r = s / z;
    let mut terms = vec![1.0];
    for k in 1..=n {
        let prev = terms[k as usize - 1];
        let div = if k <= c { f64::from(k) } else { f64::from(c) };
        terms.push(prev * f64::from(n - k + 1) * r / div);
    }
    let sum: f64 = terms.iter().sum();
    let busy: f64 = terms
        .iter()
        .enumerate()
        .map(|(k, t)| (k as u32).min(c) as f64 * t / sum)
        .sum();
    let x = busy / s;
    (x, f64::from(n) / x - z)
}

/// Mean and standard error of the mean of `xs` (sample standard deviation / √n).
pub fn mean_and_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, f64::INFINITY);
    }
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within `rel` relative error, or within the table's printed precision (6 decimals).
    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs() + 1e-6
    }

    #[test]
    fn mmc_matches_reference_table() {
        // Goal: the formulas reproduce des.md §6's reference table (λ, μ, c → P(wait), Wq, W,
        // Lq, Wq p99) to the printed precision.
        /// λ, μ, c, P(wait), Wq, W, Lq, Wq p99.
        type Row = (f64, f64, u32, f64, f64, f64, f64, f64);
        #[rustfmt::skip]
        let table: &[Row] = &[
            (0.5, 1.0, 1, 0.500000, 1.000000, 2.000000, 0.500000, 7.824),
            (0.8, 1.0, 1, 0.800000, 4.000000, 5.000000, 3.200000, 21.91),
            (0.9, 1.0, 1, 0.900000, 9.000000, 10.00000, 8.100000, 45.00),
            (1.0, 1.0, 2, 0.333333, 0.333333, 1.333333, 0.333333, 3.507),
            (1.6, 1.0, 2, 0.711111, 1.777778, 2.777778, 2.844444, 10.66),
            (4.0, 1.0, 5, 0.554113, 0.554113, 1.554113, 2.216450, 4.015),
            (8.0, 1.0, 10, 0.409180, 0.204590, 1.204590, 1.636720, 1.856),
            (9.5, 1.0, 10, 0.825586, 1.651170, 2.651170, 15.68610, 8.827),
            (80.0, 1.0, 100, 0.019646, 0.000982, 1.000982, 0.078586, 0.0338),
            (95.0, 1.0, 100, 0.506457, 0.101291, 1.101291, 9.622680, 0.785),
            (500.0, 100.0, 8, 0.167267, 0.000557555, 0.0105576, 0.278778, 0.00939),
        ];
        for &(lambda, mu, c, pw, wq, w, lq, p99) in table {
            let q = Mmc { lambda, mu, c };
            assert!(close(q.p_wait(), pw, 2e-5), "{q:?} P(wait) {}", q.p_wait());
            assert!(close(q.wq(), wq, 5e-4), "{q:?} Wq {}", q.wq());
            assert!(close(q.w(), w, 2e-5), "{q:?} W {}", q.w());
            assert!(close(q.lq(), lq, 5e-4), "{q:?} Lq {}", q.lq());
            assert!(
                close(q.wq_quantile(0.99), p99, 3e-3),
                "{q:?} p99 {}",
                q.wq_quantile(0.99)
            );
        }
    }

    #[test]
    fn erlang_b_and_mmck_match_reference_values() {
        // Goal: the loss and finite-buffer formulas reproduce des.md §6's "other checks".
        assert!(close(erlang_b(10, 8.0), 0.121661, 1e-5));
        assert!(close(erlang_b(100, 80.0), 0.003992, 1e-3));
        let m1 = Mmck {
            lambda: 1.0,
            mu: 1.0,
            c: 1,
            k: 10,
        };
        assert!(close(m1.p_block(), 1.0 / 11.0, 1e-9));
        assert!(close(m1.w(), 5.5, 1e-9));
        let m2 = Mmck {
            lambda: 2.0,
            mu: 1.0,
            c: 2,
            k: 5,
        };
        assert!(close(m2.p_block(), 0.181818, 1e-5));
        assert!(close(m2.wq(), 0.666667, 1e-5));
        let m8 = Mmck {
            lambda: 10.0,
            mu: 1.0,
            c: 8,
            k: 16,
        };
        assert!(close(m8.p_block(), 0.214729, 1e-5));
        assert!(close(m8.w(), 1.638643, 1e-5));
        // M/M/c/c is Erlang B.
        let loss = Mmck {
            lambda: 8.0,
            mu: 1.0,
            c: 10,
            k: 10,
        };
        assert!(close(loss.p_block(), erlang_b(10, 8.0), 1e-12));
    }

    #[test]
    fn closed_system_matches_reference_values() {
        // Goal: the machine-repairman formula reproduces des.md §6's closed-system values.
        for (n, c, z, x, r) in [
            (20, 2, 10.0, 1.654791, 2.086122),
            (50, 4, 10.0, 3.884982, 2.870071),
            (100, 8, 10.0, 7.910899, 2.640788),
            (10, 1, 9.0, 0.832037, 3.018700),
        ] {
            let (gx, gr) = closed_mmc(n, c, 1.0, z);
            assert!(close(gx, x, 1e-5), "N={n} X {gx}");
            assert!(close(gr, r, 1e-5), "N={n} R {gr}");
        }
    }

    #[test]
    fn wait_stddev_matches_mm1_closed_form() {
        // Goal: for M/M/1, Var[Wq] = ρ(2−ρ)/(μ−λ)² — the standard errors the statistical tests
        // use are right.
        let q = Mmc {
            lambda: 0.8,
            mu: 1.0,
            c: 1,
        };
        let expect = (0.8f64 * 1.2).sqrt() / 0.2;
        assert!(close(q.wq_stddev(), expect, 1e-9));
        let (m, se) = mean_and_se(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!(close(se, (1.0f64 / 3.0).sqrt(), 1e-12));
    }
}
