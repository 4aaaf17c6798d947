//! The lookup structures over the published indicators. Plain data: built once per generation
//! from validated indicators, then only read. Knows no transport, no MISP client, no socket.

use crate::model::{Indicator, Kind};
use serde::Serialize;
use std::collections::HashMap;

/// An immutable index over one generation of published indicators.
#[derive(Debug, Default)]
pub struct Index {
    indicators: Vec<Indicator>,
    exact: HashMap<Box<str>, Vec<u32>>,
}

/// How a match was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    Exact,
    Cidr,
    Subdomain,
    Url,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceRef<'a> {
    pub source: &'a str,
    pub event_uuid: Option<&'a str>,
    pub attribute_uuid: &'a str,
    pub category: &'a str,
    pub tags: Vec<&'a str>,
    pub timestamp: i64,
    pub to_ids: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Match<'a> {
    pub indicator: &'a str,
    #[serde(rename = "type")]
    pub misp_type: &'a str,
    pub kind: Kind,
    #[serde(rename = "match")]
    pub how: MatchKind,
    pub sources: Vec<SourceRef<'a>>,
}

/// The answer to one lookup, serialised as the `/v1/lookup` response body.
#[derive(Clone, Debug, Serialize)]
pub struct Lookup<'a> {
    pub value: &'a str,
    pub listed: bool,
    pub matches: Vec<Match<'a>>,
}

impl Index {
    pub fn build(indicators: Vec<Indicator>) -> Index {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::with_capacity(indicators.len());
        for (i, ind) in indicators.iter().enumerate() {
            exact.entry(ind.value.clone()).or_default().push(i as u32);
        }
        Index { indicators, exact }
    }

    /// Number of published indicator records (one value from two sources counts twice).
    pub fn len(&self) -> usize {
        self.indicators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indicators.is_empty()
    }

    pub fn indicators(&self) -> &[Indicator] {
        &self.indicators
    }

    pub fn lookup<'a>(&'a self, value: &'a str) -> Lookup<'a> {
        let mut matches = Vec::new();
        if let Some(ids) = self.exact.get(value.trim()) {
            let first = &self.indicators[ids[0] as usize];
            matches.push(Match {
                indicator: &first.value,
                misp_type: &first.provenance.misp_type,
                kind: first.kind,
                how: MatchKind::Exact,
                sources: ids
                    .iter()
                    .map(|&i| source_ref(&self.indicators[i as usize]))
                    .collect(),
            });
        }
        Lookup {
            value,
            listed: !matches.is_empty(),
            matches,
        }
    }
}

fn source_ref(ind: &Indicator) -> SourceRef<'_> {
    let p = &ind.provenance;
    SourceRef {
        source: &p.source,
        event_uuid: p.event_uuid.as_deref(),
        attribute_uuid: &p.attribute_uuid,
        category: &p.category,
        tags: p.tags.iter().map(|t| &**t).collect(),
        timestamp: p.timestamp,
        to_ids: p.to_ids,
    }
}
