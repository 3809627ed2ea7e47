//! Paged lists (SPEC §6): `limit` and an opaque `cursor`.
//!
//! A list endpoint reads its whole list (as it did before paging), computes totals over all
//! of it, and serves the slice `[offset, offset + limit)`. The cursor of the next page names
//! the `as_of` of the walk's first page, the offset of the next item, and a digest of the
//! whole list as the first page saw it (items and query). A later page reads the list again:
//!
//! - same digest: the list is exactly what the first page saw, so the page continues it
//!   (answering with the first page's `as_of`) — no item is skipped or repeated, however
//!   far the views moved meanwhile, as long as this list did not change;
//! - another digest: the list changed under the walk; the answer is 400 "cursor expired"
//!   and the client starts again without a cursor.
//!
//! The digest is the standard library's `DefaultHasher` (fixed keys) over the items' JSON,
//! so cursors stay valid across API restarts and between API replicas of one build.

use std::hash::Hasher;

use serde_json::Value;
use shopflow_model::Millis;

use crate::ApiError;

/// The `limit` a list endpoint uses when none is given, and the largest it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Items per page without `limit`.
    pub default: usize,
    /// The largest `limit` accepted (larger: 400).
    pub max: usize,
}

/// Settlement entries, points entries, sales series, payouts and tax invoices.
pub const LIST_LIMITS: Limits = Limits {
    default: 1000,
    max: 10_000,
};

/// A member's most recent orders: the list holds 20 at most (SPEC §6).
pub const MEMBER_ORDERS_LIMITS: Limits = Limits {
    default: 20,
    max: 20,
};

/// The paging parameters of a request, not yet parsed.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    /// Items per page.
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The page's items.
    pub items: Vec<Value>,
    /// The cursor of the next page; `None` on the last.
    pub next_cursor: Option<String>,
    /// The `as_of` of the walk's first page (this page's data is exactly that).
    pub as_of: Millis,
}

impl Page {
    /// `next_cursor` as JSON: a string, or null on the last page.
    pub fn next_cursor_json(&self) -> Value {
        match &self.next_cursor {
            Some(c) => Value::String(c.clone()),
            None => Value::Null,
        }
    }
}

/// A decoded cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    as_of: Millis,
    offset: usize,
    digest: u64,
}

/// The cursor format's version; a cursor of another version is malformed.
const VERSION: &str = "p1";

impl Cursor {
    fn encode(&self) -> String {
        format!(
            "{VERSION}.{}.{}.{:016x}",
            self.as_of, self.offset, self.digest
        )
    }

    fn decode(text: &str) -> Option<Cursor> {
        let mut parts = text.split('.');
        if parts.next()? != VERSION {
            return None;
        }
        let as_of = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let digest = parts.next()?;
        if digest.len() != 16 || parts.next().is_some() {
            return None;
        }
        let digest = u64::from_str_radix(digest, 16).ok()?;
        Some(Cursor {
            as_of,
            offset,
            digest,
        })
    }
}

/// Feeds bytes written to it into a hasher.
struct HashWriter<'a, H: Hasher>(&'a mut H);

impl<H: Hasher> std::io::Write for HashWriter<'_, H> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The digest of a whole list, the query that selected it (`scope`) and the `as_of` of the
/// walk's first page (so a cursor cannot be made to name another `as_of`).
fn digest(scope: &str, as_of: Millis, items: &[Value]) -> u64 {
    // DefaultHasher::new() has fixed keys: the same input hashes alike in every process
    // built with one Rust release.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(scope.as_bytes());
    h.write_u8(0);
    h.write_u64(as_of);
    for item in items {
        serde_json::to_writer(HashWriter(&mut h), item).expect("a JSON value serializes");
        h.write_u8(b'\n');
    }
    h.finish()
}

/// Parses `limit` against `limits`.
pub fn parse_limit(raw: Option<&str>, limits: Limits) -> Result<usize, ApiError> {
    match raw {
        None => Ok(limits.default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=limits.max).contains(&n) && text.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(n)
            }
            _ => Err(ApiError::BadRequest(format!(
                "limit must be an integer in 1..={}, got {text:?}",
                limits.max
            ))),
        },
    }
}

/// The page of `items` (the whole list, as of `as_of`) that `query` asks for. `scope` names
/// the list and the query that selected it (path and range), so a cursor only continues
/// the walk it came from.
pub fn page(
    items: Vec<Value>,
    as_of: Millis,
    scope: &str,
    query: &PageQuery,
    limits: Limits,
) -> Result<Page, ApiError> {
    let limit = parse_limit(query.limit.as_deref(), limits)?;
    let (offset, as_of, digest) = match query.cursor.as_deref() {
        None => (0, as_of, digest(scope, as_of, &items)),
        Some(text) => {
            let c = Cursor::decode(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "cursor {text:?} is malformed: pass the previous page's next_cursor unchanged"
                ))
            })?;
            let now = digest(scope, c.as_of, &items);
            if c.digest != now || c.offset > items.len() {
                return Err(ApiError::BadRequest(format!(
                    "cursor expired: the list changed since the walk's first page (as_of {}), \
                     or the cursor belongs to another query; start again without a cursor",
                    c.as_of
                )));
            }
            (c.offset, c.as_of, now)
        }
    };
    let end = offset.saturating_add(limit).min(items.len());
    let next_cursor = (end < items.len()).then(|| {
        Cursor {
            as_of,
            offset: end,
            digest,
        }
        .encode()
    });
    let items = items.into_iter().skip(offset).take(end - offset).collect();
    Ok(Page {
        items,
        next_cursor,
        as_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SMALL: Limits = Limits { default: 2, max: 3 };

    fn list(n: u64) -> Vec<Value> {
        (1..=n).map(|i| json!({"id": i})).collect()
    }

    fn query(limit: Option<&str>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit: limit.map(str::to_string),
            cursor: cursor.map(str::to_string),
        }
    }

    #[test]
    fn a_walk_serves_every_item_once_with_the_first_pages_as_of() {
        for n in 0..8 {
            for limit in 1..=3 {
                let l = limit.to_string();
                let mut seen = Vec::new();
                let mut cursor = None;
                let mut pages = 0;
                loop {
                    // The views move on between pages; this list does not.
                    let as_of = 100 + pages;
                    let p = page(
                        list(n),
                        as_of,
                        "s",
                        &query(Some(&l), cursor.as_deref()),
                        SMALL,
                    )
                    .unwrap();
                    assert_eq!(p.as_of, 100, "n={n} limit={limit}: tied to the first page");
                    assert!(p.items.len() <= limit);
                    seen.extend(p.items);
                    pages += 1;
                    match p.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                assert_eq!(seen, list(n), "n={n} limit={limit}");
                assert_eq!(pages as usize, (n as usize).div_ceil(limit).max(1));
            }
        }
    }

    #[test]
    fn a_changed_list_or_another_query_expires_the_cursor() {
        let first = page(list(5), 7, "s?from=0", &query(None, None), SMALL).unwrap();
        assert_eq!(first.items.len(), SMALL.default);
        let c = first.next_cursor.clone().expect("more pages");
        let err = page(list(6), 9, "s?from=0", &query(None, Some(&c)), SMALL).unwrap_err();
        assert!(err.to_string().contains("cursor expired"), "{err}");
        let mut changed = list(5);
        changed[4] = json!({"id": 5, "final": true});
        assert!(page(changed, 9, "s?from=0", &query(None, Some(&c)), SMALL).is_err());
        let err = page(list(5), 7, "s?from=1", &query(None, Some(&c)), SMALL).unwrap_err();
        assert!(err.to_string().contains("cursor expired"), "{err}");
    }

    #[test]
    fn bad_limits_and_cursors_are_400s() {
        for limit in ["0", "4", "-1", "x", "", "+2", " 2"] {
            let err = page(list(3), 1, "s", &query(Some(limit), None), SMALL).unwrap_err();
            assert!(
                matches!(err, ApiError::BadRequest(ref m) if m.contains("1..=3")),
                "{limit}: {err}"
            );
        }
        let good = page(list(5), 1, "s", &query(Some("1"), None), SMALL)
            .unwrap()
            .next_cursor
            .unwrap();
        // An offset past the end (a cursor is not signed: one within the list only moves
        // the walk within what the caller may read anyway).
        let parts: Vec<&str> = good.split('.').collect();
        let tampered_offset = format!("{}.{}.99.{}", parts[0], parts[1], parts[3]);
        for cursor in [
            "",
            "x",
            "p1.1.1",
            "p0.1.1.0000000000000000",
            "p1.1.1.00000000000000zz",
            &format!("{good}.1"),
        ] {
            let err = page(list(5), 1, "s", &query(None, Some(cursor)), SMALL).unwrap_err();
            assert!(err.to_string().contains("malformed"), "{cursor:?}: {err}");
        }
        let err = page(list(5), 1, "s", &query(None, Some(&tampered_offset)), SMALL).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        // Another as_of in an otherwise valid cursor: expired, not echoed back.
        let tampered_as_of = format!("{}.7.{}.{}", parts[0], parts[2], parts[3]);
        let err = page(list(5), 1, "s", &query(None, Some(&tampered_as_of)), SMALL).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            as_of: 1_700_000_000_000,
            offset: 12,
            digest: u64::MAX,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }
}
