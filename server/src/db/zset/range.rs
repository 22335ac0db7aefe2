//! Score and lex intervals (Redis's `zrangespec` / `zlexrangespec`) with
//! their bound tests and emptiness checks, as the ZRANGEBYSCORE/-LEX
//! family parses them. Both encodings search with them, so they live in
//! neither.

use std::cmp::Ordering;

/// A score interval (Redis's `zrangespec`); bounds are never NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreRange {
    pub min: f64,
    pub max: f64,
    pub minex: bool,
    pub maxex: bool,
}

impl ScoreRange {
    #[inline]
    pub fn gte_min(&self, v: f64) -> bool {
        if self.minex {
            v > self.min
        } else {
            v >= self.min
        }
    }

    #[inline]
    pub fn lte_max(&self, v: f64) -> bool {
        if self.maxex {
            v < self.max
        } else {
            v <= self.max
        }
    }

    /// Ranges that can hold nothing (`min > max`, or equal with an open end).
    pub fn is_empty(&self) -> bool {
        self.min > self.max || (self.min == self.max && (self.minex || self.maxex))
    }
}

/// One end of a lex range: `-`, `+`, or a string (Redis's
/// `shared.minstring` / `shared.maxstring` / an sds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LexBound {
    Min,
    Max,
    Str(Vec<u8>),
}

/// A lex interval (Redis's `zlexrangespec`). `-` and `+` are parsed as
/// exclusive, as Redis does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexRange {
    pub min: LexBound,
    pub minex: bool,
    pub max: LexBound,
    pub maxex: bool,
}

/// Redis's `sdscmplex`.
fn cmp_lex(a: &LexBound, b: &LexBound) -> Ordering {
    match (a, b) {
        (LexBound::Min, LexBound::Min) | (LexBound::Max, LexBound::Max) => Ordering::Equal,
        (LexBound::Min, _) | (_, LexBound::Max) => Ordering::Less,
        (LexBound::Max, _) | (_, LexBound::Min) => Ordering::Greater,
        (LexBound::Str(x), LexBound::Str(y)) => x.cmp(y),
    }
}

#[inline]
fn member_vs(m: &[u8], b: &LexBound) -> Ordering {
    match b {
        LexBound::Min => Ordering::Greater,
        LexBound::Max => Ordering::Less,
        LexBound::Str(s) => m.cmp(s),
    }
}

impl LexRange {
    #[inline]
    pub fn gte_min(&self, m: &[u8]) -> bool {
        let c = member_vs(m, &self.min);
        if self.minex {
            c == Ordering::Greater
        } else {
            c != Ordering::Less
        }
    }

    #[inline]
    pub fn lte_max(&self, m: &[u8]) -> bool {
        let c = member_vs(m, &self.max);
        if self.maxex {
            c == Ordering::Less
        } else {
            c != Ordering::Greater
        }
    }

    pub fn is_empty(&self) -> bool {
        let c = cmp_lex(&self.min, &self.max);
        c == Ordering::Greater || (c == Ordering::Equal && (self.minex || self.maxex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_bounds() {
        let r = LexRange {
            min: LexBound::Min,
            minex: true,
            max: LexBound::Max,
            maxex: true,
        };
        assert!(!r.is_empty() && r.gte_min(b"") && r.lte_max(b"\xff"));
        let r = LexRange {
            min: LexBound::Min,
            minex: true,
            max: LexBound::Min,
            maxex: true,
        };
        assert!(r.is_empty());
        let r = LexRange {
            min: LexBound::Str(b"b".to_vec()),
            minex: false,
            max: LexBound::Str(b"b".to_vec()),
            maxex: false,
        };
        assert!(!r.is_empty() && r.gte_min(b"b") && !r.gte_min(b"a") && !r.lte_max(b"ba"));
    }
}
