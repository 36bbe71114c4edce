//! The risk model (spec section 2): inherent and residual scores, levels per method.
//!
//! Scores are held in tenths (`Score(72)` is 7.2) so that the half-up rounding of the spec is
//! exact integer arithmetic, never a floating-point accident.

use chrono::{DateTime, Utc};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::ids::Subject;
use crate::kinds::{Effectiveness, Level, MethodKind};
use crate::text::FieldError;

/// A score with one decimal, stored in tenths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score(pub u32);

impl Score {
    /// The score as a number with one decimal.
    pub fn value(self) -> f64 {
        f64::from(self.0) / 10.0
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// The residual never falls below this percentage of the inherent score (spec section 2).
pub const RESIDUAL_FLOOR_PERCENT: u32 = 20;

/// The remaining fraction `1 - e` of a verified control, as `(numerator, denominator)`.
fn remaining(e: Effectiveness) -> (u128, u128) {
    (u128::from(100 - e.reduction_percent().min(100)), 100)
}

/// How an assessment scored the inherent risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `likelihood` x `impact`, each 1..5.
    Matrix {
        /// 1 very low .. 5 very high.
        likelihood: u8,
        /// 1 very low .. 5 very high.
        impact: u8,
    },
    /// A CVSS vector, with the base score the library computed when it was parsed.
    Cvss {
        /// `CVSS:3.1/...` or `CVSS:4.0/...`.
        vector: String,
        /// Its base score.
        score: Score,
    },
}

impl Method {
    /// Parses a matrix method; both values must be 1..5.
    pub fn matrix(likelihood: i64, impact: i64) -> Result<Self, Vec<FieldError>> {
        let scale = |name: &str, v: i64| {
            u8::try_from(v)
                .ok()
                .filter(|v| (1..=5).contains(v))
                .ok_or_else(|| FieldError::new(name, "out_of_range", "must be an integer from 1 to 5"))
        };
        match (scale("likelihood", likelihood), scale("impact", impact)) {
            (Ok(likelihood), Ok(impact)) => Ok(Self::Matrix { likelihood, impact }),
            (l, i) => Err([l.err(), i.err()].into_iter().flatten().collect()),
        }
    }

    /// Parses a CVSS v3.1 or v4.0 vector and scores it with the RustSec `cvss` crate.
    pub fn cvss(vector: &str) -> Result<Self, FieldError> {
        let invalid = |msg: String| FieldError::new("vector", "invalid_cvss_vector", msg);
        let vector = vector.trim();
        if vector.len() > 200 {
            return Err(invalid("must be at most 200 characters".to_owned()));
        }
        match cvss::Cvss::from_str(vector) {
            Ok(c @ (cvss::Cvss::CvssV31(_) | cvss::Cvss::CvssV40(_))) => {
                let tenths = (c.score() * 10.0).round();
                if !(0.0..=100.0).contains(&tenths) {
                    return Err(invalid(format!("the library scored it {}, outside 0.0..10.0", c.score())));
                }
                Ok(Self::Cvss { vector: vector.to_owned(), score: Score(tenths as u32) })
            }
            Ok(_) => Err(invalid("only CVSS:3.1 and CVSS:4.0 vectors are accepted".to_owned())),
            Err(e) => Err(invalid(format!("not a valid CVSS v3.1 or v4.0 vector: {e}"))),
        }
    }

    /// Which method this is.
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Matrix { .. } => MethodKind::Matrix,
            Method::Cvss { .. } => MethodKind::Cvss,
        }
    }

    /// The inherent score: likelihood x impact, or the vector's base score.
    pub fn inherent(&self) -> Score {
        match self {
            Method::Matrix { likelihood, impact } => Score(u32::from(*likelihood) * u32::from(*impact) * 10),
            Method::Cvss { score, .. } => *score,
        }
    }
}

/// The level of a score under a method's thresholds.
pub fn level(kind: MethodKind, score: Score) -> Level {
    let (medium, high, critical) = match kind {
        MethodKind::Matrix => (50, 100, 170),
        MethodKind::Cvss => (40, 70, 90),
    };
    match score.0 {
        s if s < medium => Level::Low,
        s if s < high => Level::Medium,
        s if s < critical => Level::High,
        _ => Level::Critical,
    }
}

/// Residual = inherent x max(0.2, product over verified controls of (1 - e)), half-up to one
/// decimal. Only the effectiveness of verified controls is passed in.
pub fn residual(inherent: Score, verified: impl IntoIterator<Item = Effectiveness>) -> Score {
    let (mut num, mut den) = (1u128, 1u128);
    for e in verified {
        let (n, d) = remaining(e);
        num *= n;
        den *= d;
        if num * 100 <= den * u128::from(RESIDUAL_FLOOR_PERCENT) {
            // The floor is reached; further controls change nothing.
            (num, den) = (u128::from(RESIDUAL_FLOOR_PERCENT), 100);
            break;
        }
    }
    // round half up of inherent * num / den, in tenths
    let x = u128::from(inherent.0) * num;
    let tenths = (2 * x + den) / (2 * den);
    Score(u32::try_from(tenths).unwrap_or(u32::MAX))
}

/// The risk figures at one moment: what an approval accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskSnapshot {
    /// The assessment they come from.
    pub assessment_id: Uuid,
    /// The method.
    pub method: MethodKind,
    /// Inherent score.
    pub inherent_score: Score,
    /// Inherent level.
    pub inherent_level: Level,
    /// Residual score.
    pub residual_score: Score,
    /// Residual level.
    pub residual_level: Level,
}

/// One assessment of an exception's risk.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Its id.
    pub id: Uuid,
    /// The round it belongs to.
    pub round: u32,
    /// How the inherent risk was scored.
    pub method: Method,
    /// Inherent score.
    pub inherent_score: Score,
    /// Residual score with the verified controls at the time of the last computation.
    pub residual_score: Score,
    /// Why the analyst scored it so.
    pub rationale: String,
    /// Threats considered.
    pub threat_vectors: Vec<String>,
    /// Who assessed.
    pub assessed_by: Subject,
    /// When.
    pub assessed_at: DateTime<Utc>,
}

impl Assessment {
    /// Inherent level under the method's thresholds.
    pub fn inherent_level(&self) -> Level {
        level(self.method.kind(), self.inherent_score)
    }

    /// Residual level under the method's thresholds.
    pub fn residual_level(&self) -> Level {
        level(self.method.kind(), self.residual_score)
    }

    /// Recomputes the residual score from the effectiveness of the controls that reduce risk.
    pub fn recompute(&mut self, effective: impl IntoIterator<Item = Effectiveness>) {
        self.residual_score = residual(self.inherent_score, effective);
    }

    /// The figures to record with an approval.
    pub fn snapshot(&self) -> RiskSnapshot {
        RiskSnapshot {
            assessment_id: self.id,
            method: self.method.kind(),
            inherent_score: self.inherent_score,
            inherent_level: self.inherent_level(),
            residual_score: self.residual_score,
            residual_level: self.residual_level(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matrix_four_by_four_is_sixteen_high() {
        let m = Method::matrix(4, 4).unwrap();
        assert_eq!(m.inherent(), Score(160));
        assert_eq!(level(MethodKind::Matrix, m.inherent()), Level::High);
    }

    #[test]
    fn verified_high_and_medium_controls_leave_seven_point_two_medium() {
        let r = residual(Score(160), [Effectiveness::High, Effectiveness::Medium]);
        assert_eq!(r, Score(72));
        assert_eq!(r.to_string(), "7.2");
        assert_eq!(level(MethodKind::Matrix, r), Level::Medium);
    }

    #[test]
    fn cvss_31_critical_vector_scores_nine_point_eight() {
        let m = Method::cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap();
        assert_eq!(m.inherent(), Score(98));
        assert_eq!(level(MethodKind::Cvss, m.inherent()), Level::Critical);
    }

    #[test]
    fn cvss_31_changed_scope_vector_scores_six_point_one() {
        let m = Method::cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N").unwrap();
        assert_eq!(m.inherent(), Score(61));
        assert_eq!(level(MethodKind::Cvss, m.inherent()), Level::Medium);
    }

    #[test]
    fn cvss_40_vector_is_scored_by_the_library() {
        let m = Method::cvss("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N").unwrap();
        assert_eq!(m.inherent(), Score(93));
    }

    #[test]
    fn cvss_30_and_garbage_are_refused_naming_the_vector() {
        assert_eq!(Method::cvss("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap_err().field, "vector");
        assert_eq!(Method::cvss("not a vector").unwrap_err().code, "invalid_cvss_vector");
    }

    #[test]
    fn matrix_out_of_range_names_each_field() {
        let e = Method::matrix(0, 6).unwrap_err();
        assert_eq!(e.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["likelihood", "impact"]);
    }

    #[test]
    fn levels_follow_the_thresholds() {
        use MethodKind::*;
        let cases = [
            (Matrix, 49, Level::Low),
            (Matrix, 50, Level::Medium),
            (Matrix, 99, Level::Medium),
            (Matrix, 100, Level::High),
            (Matrix, 169, Level::High),
            (Matrix, 170, Level::Critical),
            (Cvss, 0, Level::Low),
            (Cvss, 39, Level::Low),
            (Cvss, 40, Level::Medium),
            (Cvss, 70, Level::High),
            (Cvss, 89, Level::High),
            (Cvss, 90, Level::Critical),
        ];
        for (kind, s, want) in cases {
            assert_eq!(level(kind, Score(s)), want, "{kind} {s}");
        }
    }

    #[test]
    fn rounding_is_half_up() {
        // 15 x 0.9 = 13.5 tenths -> 14 (1.4); 25 x 0.9 = 22.5 -> 23
        assert_eq!(residual(Score(15), [Effectiveness::Low]), Score(14));
        assert_eq!(residual(Score(25), [Effectiveness::Low]), Score(23));
    }

    fn effectiveness() -> impl Strategy<Value = Effectiveness> {
        prop_oneof![Just(Effectiveness::Low), Just(Effectiveness::Medium), Just(Effectiveness::High)]
    }

    proptest! {
        #[test]
        fn residual_stays_between_a_fifth_and_the_inherent(
            inherent in 0u32..=250, controls in proptest::collection::vec(effectiveness(), 0..40)
        ) {
            let r = residual(Score(inherent), controls.iter().copied());
            prop_assert!(r <= Score(inherent));
            // 20% of the inherent score, rounded half-up like every score
            let floor = (2 * inherent + 5) / 10;
            prop_assert!(r.0 >= floor, "residual {} below floor {}", r.0, floor);
        }

        #[test]
        fn another_verified_control_never_raises_the_residual(
            inherent in 0u32..=250, controls in proptest::collection::vec(effectiveness(), 0..10), extra in effectiveness()
        ) {
            let before = residual(Score(inherent), controls.iter().copied());
            let after = residual(Score(inherent), controls.iter().copied().chain([extra]));
            prop_assert!(after <= before);
        }
    }
}
