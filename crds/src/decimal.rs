//! Decimal amounts in the API are strings (never floats), each kind with its own rule.
//!
//! Every newtype here does three jobs: it parses the string into a [`Decimal`], it rejects
//! values outside its rule with a message naming the rule, and it gives the CRD schema a
//! `pattern` so the API server refuses a bad value before anything reaches the operator.

use regex::Regex;
use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use std::{borrow::Cow, fmt, str::FromStr, sync::LazyLock};

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {rule}")]
pub struct DecimalRuleError {
    pub value: String,
    pub rule: &'static str,
}

/// What every decimal kind states about itself.
pub trait DecimalKind {
    /// The rule, in words, that a value must follow.
    const RULE: &'static str;
    /// The regular expression the CRD schema enforces (Go RE2 syntax).
    const PATTERN: &'static str;
}

macro_rules! decimal_kind {
    ($(#[$doc:meta])* $name:ident, rule = $rule:literal, pattern = $pattern:literal, check = $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Decimal);

        impl DecimalKind for $name {
            const RULE: &'static str = $rule;
            const PATTERN: &'static str = $pattern;
        }

        impl $name {
            pub fn new(value: Decimal) -> Result<Self, DecimalRuleError> {
                let check: fn(Decimal) -> bool = $check;
                if check(value) {
                    Ok(Self(value.normalize()))
                } else {
                    Err(DecimalRuleError { value: value.to_string(), rule: $rule })
                }
            }

            pub fn value(self) -> Decimal {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = DecimalRuleError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                static SYNTAX: LazyLock<Regex> =
                    LazyLock::new(|| Regex::new($pattern).expect("the schema pattern is a valid regex"));
                let refuse = || DecimalRuleError { value: s.to_string(), rule: $rule };
                // The schema's own pattern decides the syntax, so the API server and this
                // parser can never disagree about what is admitted.
                if !SYNTAX.is_match(s) {
                    return Err(refuse());
                }
                let value = Decimal::from_str_exact(s).map_err(|_| refuse())?;
                Self::new(value).map_err(|_| refuse())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = Cow::<str>::deserialize(d)?;
                text.parse().map_err(D::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": concat!("A decimal string: ", $rule, "."),
                    "pattern": $pattern,
                    "maxLength": 40,
                })
            }
        }
    };
}

decimal_kind!(
    /// An amount of quote currency, a count-like limit or a ratio that may be zero.
    NonNegativeDecimal,
    rule = "a non-negative decimal such as \"250\" or \"0.5\"",
    pattern = "^(0|[1-9][0-9]{0,14})(\\.[0-9]{1,12})?$",
    check = |v| v >= Decimal::ZERO
);

decimal_kind!(
    /// A strictly positive decimal (leverage, caps that must allow something).
    PositiveDecimal,
    rule = "a positive decimal such as \"2\" or \"0.5\"",
    pattern = "^([1-9][0-9]{0,14}(\\.[0-9]{1,12})?|0\\.[0-9]{0,11}[1-9][0-9]{0,11})$",
    check = |v| v > Decimal::ZERO
);

decimal_kind!(
    /// A percentage between 0 and 100 inclusive.
    Percent,
    rule = "a decimal percentage between 0 and 100",
    pattern = "^(100(\\.0{1,12})?|(0|[1-9][0-9]?)(\\.[0-9]{1,12})?)$",
    check = |v| v >= Decimal::ZERO && v <= Decimal::ONE_HUNDRED
);

decimal_kind!(
    /// A fraction between 0 and 1 inclusive (e.g. a Herfindahl index).
    Fraction,
    rule = "a decimal between 0 and 1",
    pattern = "^(1(\\.0{1,12})?|0(\\.[0-9]{1,12})?)$",
    check = |v| v >= Decimal::ZERO && v <= Decimal::ONE
);

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn accepts_plain_decimals_within_the_rule() {
        assert_eq!("250".parse::<NonNegativeDecimal>().unwrap().value(), dec!(250));
        assert_eq!("0.50".parse::<Fraction>().unwrap().value(), dec!(0.5));
        assert_eq!("100".parse::<Percent>().unwrap().value(), dec!(100));
        assert_eq!("0.001".parse::<PositiveDecimal>().unwrap().value(), dec!(0.001));
    }

    #[test]
    fn refuses_what_the_schema_refuses_with_the_rule_in_the_message() {
        for bad in ["", "-1", "1e3", " 1", "1.", ".5", "abc", "+2", "1,5"] {
            let err = bad.parse::<NonNegativeDecimal>().unwrap_err();
            assert!(err.to_string().contains("non-negative decimal"), "{bad}: {err}");
        }
        assert!("0".parse::<PositiveDecimal>().is_err());
        assert!("0.000".parse::<PositiveDecimal>().is_err());
        assert!("100.5".parse::<Percent>().is_err());
        assert!("1.01".parse::<Fraction>().is_err());
    }

    #[test]
    fn serialises_as_a_string_and_never_as_a_number() {
        let v: NonNegativeDecimal = serde_json::from_str("\"12.50\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"12.5\"");
        assert!(serde_json::from_str::<NonNegativeDecimal>("12.5").is_err());
    }

    fn schema_accepts<T: DecimalKind>(text: &str) -> bool {
        regex::Regex::new(T::PATTERN).unwrap().is_match(text)
    }

    proptest::proptest! {
        /// The Rust parser and the schema pattern the API server enforces agree on every
        /// input: what one accepts the other accepts, so nothing the API server admits can
        /// fail to deserialise in the operator or the bot.
        #[test]
        fn parser_and_schema_pattern_agree(text in "[-+.0-9a]{0,6}|[0-9]{1,16}(\\.[0-9]{1,13})?|0\\.[0-9]{1,24}") {
            proptest::prop_assert_eq!(text.parse::<NonNegativeDecimal>().is_ok(), schema_accepts::<NonNegativeDecimal>(&text), "{}", text);
            proptest::prop_assert_eq!(text.parse::<PositiveDecimal>().is_ok(), schema_accepts::<PositiveDecimal>(&text), "{}", text);
            proptest::prop_assert_eq!(text.parse::<Percent>().is_ok(), schema_accepts::<Percent>(&text), "{}", text);
            proptest::prop_assert_eq!(text.parse::<Fraction>().is_ok(), schema_accepts::<Fraction>(&text), "{}", text);
        }

        #[test]
        fn canonical_non_negative_values_round_trip(units in 0u64..10_000_000_000, scale in 0u32..8) {
            let value = Decimal::new(units as i64, scale);
            let parsed: NonNegativeDecimal = value.to_string().parse().unwrap();
            proptest::prop_assert_eq!(parsed.value(), value.normalize());
        }
    }
}
