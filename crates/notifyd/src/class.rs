//! Traffic classes: how urgent a request is (`urgent`, `normal`, `bulk`). Within a provider's
//! capacity urgent requests go first; normal and bulk share what is left by weights
//! (`[scheduling]`), so bulk never starves. See docs/scheduling.md.

use serde::{Deserialize, Serialize};

/// A request's traffic class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// One-time codes, alerts: ahead of everything else.
    Urgent,
    /// The default.
    #[default]
    Normal,
    /// Campaigns: shares the provider with `normal` by weight.
    Bulk,
}

impl Class {
    /// Every class, most urgent first.
    pub const ALL: [Class; 3] = [Class::Urgent, Class::Normal, Class::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Urgent => "urgent",
            Class::Normal => "normal",
            Class::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Its position in [`Class::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Class::ALL {
            assert_eq!(Class::parse(c.as_str()), Some(c));
            assert_eq!(Class::ALL[c.index()], c);
        }
        assert_eq!(Class::parse("URGENT"), None);
        assert_eq!(Class::parse(""), None);
    }
}
