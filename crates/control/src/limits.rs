//! The range of every number the API takes lives with the API's types
//! ([`cloudproxy_api::limits`], re-exported here); what stays is the SQL that keeps the
//! control plane's sums inside a signed 64-bit integer.

pub use cloudproxy_api::limits::*;

/// `$acc + $add` in SQL, saturating at i64::MAX, for non-negative 64-bit columns; the same
/// text on both backends. (`$add <= MAX - $acc` cannot overflow: both are non-negative.)
macro_rules! saturating_add_sql {
    ($acc:literal, $add:literal) => {
        concat!(
            "CASE WHEN ",
            $add,
            " > 9223372036854775807 - ",
            $acc,
            " THEN 9223372036854775807 ELSE ",
            $acc,
            " + ",
            $add,
            " END"
        )
    };
}

pub(crate) use saturating_add_sql;
