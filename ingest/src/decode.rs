//! Decoding and schema validation of one input message (SPEC §1, §3, §8).
//!
//! The checks run in the contract's order: JSON, `event_id`, `type`, `ts`, then the type's
//! fields in the order SPEC §1 lists them. The first failing check decides the reason.
//! Within an array field (`lines`) the order is: the field's JSON type, the entry count,
//! each entry's fields in order, then the distinctness of `line_no`.
//!
//! Numbers are inspected in their raw JSON text, so an integer too large for any machine
//! type is still recognised as an integer (and rejected as `out_of_range`), while `1.0` or
//! `1e3` is `mistyped_field`.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use serde_json::value::RawValue;
use shopflow_model::{DeadLetterReason, Event, EventBody, OrderLine, RefundLine, Shipping, MAX_ID};

/// Largest quantity or |delta|.
pub const MAX_QTY: i128 = 1_000_000;
/// Largest amount of money (price, unit_price, amounts), in KRW.
pub const MAX_MONEY: i128 = 1_000_000_000_000;
/// Most lines in an order or a refund.
pub const MAX_LINES: usize = 200;
/// Longest `event_id`, in Unicode scalar values.
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Longest `location`, in Unicode scalar values.
pub const MAX_LOCATION_CHARS: usize = 200;

/// Why a message was rejected, with a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The contract's reason.
    pub reason: DeadLetterReason,
    /// What exactly was wrong.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason` with `detail`.
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

type Result<T> = std::result::Result<T, Rejection>;

/// Decodes and schema-checks one message. Everything after the schema (dedup, order
/// existence, life cycle) is the [`crate::validate`] module's job.
pub fn decode(bytes: &[u8]) -> Result<Event> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Rejection::new(DeadLetterReason::MalformedJson, format!("not UTF-8: {e}")))?;
    let obj = Obj::parse(text, "message")?;
    let event_id = obj.string("event_id")?;
    let n = event_id.chars().count();
    if n == 0 || n > MAX_EVENT_ID_CHARS {
        return Err(Rejection::new(
            DeadLetterReason::OutOfRange,
            format!("event_id has {n} characters, expected 1..=128"),
        ));
    }
    let ty = obj.string("type")?;
    let Some(kind) = Kind::parse(&ty) else {
        let mut shown: String = ty.chars().take(64).collect();
        if shown.len() < ty.len() {
            shown.push('…');
        }
        return Err(Rejection::new(
            DeadLetterReason::UnknownType,
            format!("unknown type {shown:?}"),
        ));
    };
    let ts = obj.int("ts", 0, MAX_ID as i128)? as u64;
    let body = kind.decode_body(&obj)?;
    Ok(Event { event_id, ts, body })
}

#[derive(Clone, Copy)]
enum Kind {
    CategoryUpserted,
    ProductUpserted,
    StockReceived,
    StockAdjusted,
    MemberJoined,
    WowSubscribed,
    WowCancelled,
    OrderPlaced,
    PaymentApproved,
    PaymentFailed,
    OrderCancelled,
    OrderShipped,
    DeliveryUpdated,
    OrderDelivered,
    OrderConfirmed,
    ReturnRequested,
    ReturnRejected,
    RefundCompleted,
    ReviewPosted,
    ReviewDeleted,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "category.upserted" => Kind::CategoryUpserted,
            "product.upserted" => Kind::ProductUpserted,
            "stock.received" => Kind::StockReceived,
            "stock.adjusted" => Kind::StockAdjusted,
            "member.joined" => Kind::MemberJoined,
            "wow.subscribed" => Kind::WowSubscribed,
            "wow.cancelled" => Kind::WowCancelled,
            "order.placed" => Kind::OrderPlaced,
            "payment.approved" => Kind::PaymentApproved,
            "payment.failed" => Kind::PaymentFailed,
            "order.cancelled" => Kind::OrderCancelled,
            "order.shipped" => Kind::OrderShipped,
            "delivery.updated" => Kind::DeliveryUpdated,
            "order.delivered" => Kind::OrderDelivered,
            "order.confirmed" => Kind::OrderConfirmed,
            "return.requested" => Kind::ReturnRequested,
            "return.rejected" => Kind::ReturnRejected,
            "refund.completed" => Kind::RefundCompleted,
            "review.posted" => Kind::ReviewPosted,
            "review.deleted" => Kind::ReviewDeleted,
            _ => return None,
        })
    }

    fn decode_body(self, o: &Obj<'_>) -> Result<EventBody> {
        Ok(match self {
            Kind::CategoryUpserted => EventBody::CategoryUpserted {
                category_id: o.id("category_id")?,
                name: o.string("name")?,
                commission_bp: o.int("commission_bp", 500, 1500)? as u64,
            },
            Kind::ProductUpserted => EventBody::ProductUpserted {
                sku: o.id("sku")?,
                seller_id: o.id("seller_id")?,
                category_id: o.id("category_id")?,
                name: o.string("name")?,
                price: o.int("price", 1, MAX_MONEY)? as u64,
            },
            Kind::StockReceived => EventBody::StockReceived {
                sku: o.id("sku")?,
                qty: o.int("qty", 1, MAX_QTY)? as u64,
            },
            Kind::StockAdjusted => {
                let sku = o.id("sku")?;
                let delta = o.int("delta", -MAX_QTY, MAX_QTY)?;
                if delta == 0 {
                    return Err(Rejection::new(
                        DeadLetterReason::OutOfRange,
                        "delta is 0, expected a non-zero correction",
                    ));
                }
                EventBody::StockAdjusted {
                    sku,
                    delta: delta as i64,
                }
            }
            Kind::MemberJoined => EventBody::MemberJoined {
                member_id: o.id("member_id")?,
            },
            Kind::WowSubscribed => EventBody::WowSubscribed {
                member_id: o.id("member_id")?,
            },
            Kind::WowCancelled => EventBody::WowCancelled {
                member_id: o.id("member_id")?,
            },
            Kind::OrderPlaced => {
                let order_id = o.id("order_id")?;
                let member_id = o.id("member_id")?;
                let shipping_text = o.string("shipping")?;
                let shipping = Shipping::parse(&shipping_text).ok_or_else(|| {
                    Rejection::new(
                        DeadLetterReason::OutOfRange,
                        "shipping is not one of rocket, fresh, dawn, standard",
                    )
                })?;
                let raw_lines = o.array("lines", 1)?;
                let mut lines = Vec::with_capacity(raw_lines.len());
                for (i, raw) in raw_lines.iter().enumerate() {
                    let l = Obj::parse_field(raw, &format!("lines[{i}]"))?;
                    lines.push(OrderLine {
                        line_no: l.id("line_no")?,
                        sku: l.id("sku")?,
                        qty: l.int("qty", 1, MAX_QTY)? as u64,
                        unit_price: l.int("unit_price", 1, MAX_MONEY)? as u64,
                    });
                }
                distinct_line_nos(lines.iter().map(|l| l.line_no))?;
                EventBody::OrderPlaced {
                    order_id,
                    member_id,
                    shipping,
                    lines,
                }
            }
            Kind::PaymentApproved => EventBody::PaymentApproved {
                order_id: o.id("order_id")?,
                amount: o.int("amount", 1, MAX_MONEY)? as u64,
            },
            Kind::PaymentFailed => EventBody::PaymentFailed {
                order_id: o.id("order_id")?,
            },
            Kind::OrderCancelled => EventBody::OrderCancelled {
                order_id: o.id("order_id")?,
            },
            Kind::OrderShipped => EventBody::OrderShipped {
                order_id: o.id("order_id")?,
            },
            Kind::DeliveryUpdated => {
                let order_id = o.id("order_id")?;
                let location = o.string("location")?;
                let n = location.chars().count();
                if n > MAX_LOCATION_CHARS {
                    return Err(Rejection::new(
                        DeadLetterReason::OutOfRange,
                        format!("location has {n} characters, at most 200 allowed"),
                    ));
                }
                EventBody::DeliveryUpdated { order_id, location }
            }
            Kind::OrderDelivered => EventBody::OrderDelivered {
                order_id: o.id("order_id")?,
            },
            Kind::OrderConfirmed => EventBody::OrderConfirmed {
                order_id: o.id("order_id")?,
            },
            Kind::ReturnRequested => EventBody::ReturnRequested {
                order_id: o.id("order_id")?,
                reason: o.string("reason")?,
            },
            Kind::ReturnRejected => EventBody::ReturnRejected {
                order_id: o.id("order_id")?,
            },
            Kind::RefundCompleted => {
                let order_id = o.id("order_id")?;
                let amount = o.int("amount", 0, MAX_MONEY)? as u64;
                let restock = o.boolean("restock")?;
                let raw_lines = o.array("lines", 0)?;
                let mut lines = Vec::with_capacity(raw_lines.len());
                for (i, raw) in raw_lines.iter().enumerate() {
                    let l = Obj::parse_field(raw, &format!("lines[{i}]"))?;
                    lines.push(RefundLine {
                        line_no: l.id("line_no")?,
                        qty: l.int("qty", 1, MAX_QTY)? as u64,
                    });
                }
                distinct_line_nos(lines.iter().map(|l| l.line_no))?;
                EventBody::RefundCompleted {
                    order_id,
                    amount,
                    restock,
                    lines,
                }
            }
            Kind::ReviewPosted => EventBody::ReviewPosted {
                review_id: o.id("review_id")?,
                sku: o.id("sku")?,
                member_id: o.id("member_id")?,
                rating: o.int("rating", 1, 5)? as u64,
            },
            Kind::ReviewDeleted => EventBody::ReviewDeleted {
                review_id: o.id("review_id")?,
            },
        })
    }
}

fn distinct_line_nos(nos: impl Iterator<Item = u64>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for no in nos {
        if !seen.insert(no) {
            return Err(Rejection::new(
                DeadLetterReason::OutOfRange,
                format!("line_no {no} appears twice in lines"),
            ));
        }
    }
    Ok(())
}

/// A JSON object whose members are kept as raw text until a field is asked for.
struct Obj<'a> {
    /// Members in document order; with a repeated name the last one counts.
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// Prefix for field names in details (`""` at the top level, `"lines[3]."` inside).
    path: String,
}

/// An object's members in one pass over its text, names borrowed unless escaped.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Name<'a>(Cow<'a, str>);
        impl<'de> Deserialize<'de> for Name<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Name<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a member name")
                    }
                    fn visit_borrowed_str<E>(
                        self,
                        v: &'de str,
                    ) -> std::result::Result<Name<'de>, E> {
                        Ok(Name(Cow::Borrowed(v)))
                    }
                    fn visit_str<E>(self, v: &str) -> std::result::Result<Name<'de>, E> {
                        Ok(Name(Cow::Owned(v.to_owned())))
                    }
                }
                d.deserialize_str(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((name, value));
                }
                Ok(Members(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Obj<'a> {
    /// The whole message: anything but a JSON object is `malformed_json`.
    fn parse(text: &'a str, what: &str) -> Result<Obj<'a>> {
        // The common case in one pass; anything else (or an error) takes the checks below,
        // which give the detail of the rejection.
        if text.starts_with('{') {
            if let Ok(Members(fields)) = serde_json::from_str(text) {
                return Ok(Obj {
                    fields,
                    path: String::new(),
                });
            }
        }
        let value: &RawValue = serde_json::from_str(text)
            .map_err(|e| Rejection::new(DeadLetterReason::MalformedJson, format!("{what}: {e}")))?;
        if !value.get().starts_with('{') {
            return Err(Rejection::new(
                DeadLetterReason::MalformedJson,
                format!("{what} is JSON but not an object"),
            ));
        }
        let Members(fields) = serde_json::from_str(value.get())
            .map_err(|e| Rejection::new(DeadLetterReason::MalformedJson, format!("{what}: {e}")))?;
        Ok(Obj {
            fields,
            path: String::new(),
        })
    }

    /// A nested object (an array entry): anything but an object is `mistyped_field`.
    fn parse_field(raw: &'a RawValue, path: &str) -> Result<Obj<'a>> {
        if !raw.get().starts_with('{') {
            return Err(Rejection::new(
                DeadLetterReason::MistypedField,
                format!("{path} is not an object"),
            ));
        }
        let Members(fields) = serde_json::from_str(raw.get())
            .map_err(|e| Rejection::new(DeadLetterReason::MalformedJson, format!("{path}: {e}")))?;
        Ok(Obj {
            fields,
            path: format!("{path}."),
        })
    }

    fn raw(&self, name: &str) -> Result<&'a str> {
        let found = self.fields.iter().rev().find(|(n, _)| n == name);
        found.map(|(_, r)| r.get()).ok_or_else(|| {
            Rejection::new(
                DeadLetterReason::MissingField,
                format!("{}{name} is missing", self.path),
            )
        })
    }

    fn mistyped(&self, name: &str, expected: &str) -> Rejection {
        Rejection::new(
            DeadLetterReason::MistypedField,
            format!("{}{name} is not {expected}", self.path),
        )
    }

    fn string(&self, name: &str) -> Result<String> {
        let raw = self.raw(name)?;
        if !raw.starts_with('"') {
            return Err(self.mistyped(name, "a string"));
        }
        serde_json::from_str(raw).map_err(|_| self.mistyped(name, "a valid string"))
    }

    fn boolean(&self, name: &str) -> Result<bool> {
        match self.raw(name)? {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.mistyped(name, "a boolean")),
        }
    }

    fn array(&self, name: &str, min_len: usize) -> Result<Vec<&'a RawValue>> {
        let raw = self.raw(name)?;
        if !raw.starts_with('[') {
            return Err(self.mistyped(name, "an array"));
        }
        let items: Vec<&RawValue> =
            serde_json::from_str(raw).map_err(|_| self.mistyped(name, "an array"))?;
        if items.len() < min_len || items.len() > MAX_LINES {
            return Err(Rejection::new(
                DeadLetterReason::OutOfRange,
                format!(
                    "{}{name} has {} entries, expected {min_len}..={MAX_LINES}",
                    self.path,
                    items.len()
                ),
            ));
        }
        Ok(items)
    }

    /// An integer in `lo..=hi`.
    fn int(&self, name: &str, lo: i128, hi: i128) -> Result<i128> {
        let raw = self.raw(name)?;
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        let is_integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if !is_integer {
            return Err(self.mistyped(name, "an integer"));
        }
        // 38 digits always fit an i128; anything longer is out of every bound we have.
        let value = if digits.len() <= 38 {
            raw.parse::<i128>().ok()
        } else {
            None
        };
        match value {
            Some(v) if (lo..=hi).contains(&v) => Ok(v),
            _ => Err(Rejection::new(
                DeadLetterReason::OutOfRange,
                format!("{}{name} = {raw} is outside {lo}..={hi}", self.path),
            )),
        }
    }

    /// An id: an integer in 1..=2^53−1.
    fn id(&self, name: &str) -> Result<u64> {
        Ok(self.int(name, 1, MAX_ID as i128)? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeadLetterReason::*;

    fn reason(text: &str) -> DeadLetterReason {
        decode(text.as_bytes()).expect_err(text).reason
    }

    #[test]
    fn decodes_every_type() {
        let cases = [
            r#"{"event_id":"a","type":"category.upserted","ts":1,"category_id":1,"name":"n","commission_bp":500}"#,
            r#"{"event_id":"a","type":"product.upserted","ts":1,"sku":1,"seller_id":2,"category_id":3,"name":"n","price":1}"#,
            r#"{"event_id":"a","type":"stock.received","ts":1,"sku":1,"qty":1000000}"#,
            r#"{"event_id":"a","type":"stock.adjusted","ts":1,"sku":1,"delta":-1000000}"#,
            r#"{"event_id":"a","type":"member.joined","ts":1,"member_id":1}"#,
            r#"{"event_id":"a","type":"wow.subscribed","ts":1,"member_id":1}"#,
            r#"{"event_id":"a","type":"wow.cancelled","ts":1,"member_id":1}"#,
            r#"{"event_id":"a","type":"order.placed","ts":1,"order_id":1,"member_id":1,"shipping":"dawn","lines":[{"line_no":1,"sku":1,"qty":1,"unit_price":1}]}"#,
            r#"{"event_id":"a","type":"payment.approved","ts":1,"order_id":1,"amount":1000000000000}"#,
            r#"{"event_id":"a","type":"payment.failed","ts":1,"order_id":1}"#,
            r#"{"event_id":"a","type":"order.cancelled","ts":1,"order_id":1}"#,
            r#"{"event_id":"a","type":"order.shipped","ts":1,"order_id":1}"#,
            r#"{"event_id":"a","type":"delivery.updated","ts":1,"order_id":1,"location":"서울 송파"}"#,
            r#"{"event_id":"a","type":"order.delivered","ts":1,"order_id":1}"#,
            r#"{"event_id":"a","type":"order.confirmed","ts":1,"order_id":1}"#,
            r#"{"event_id":"a","type":"return.requested","ts":1,"order_id":1,"reason":"broken"}"#,
            r#"{"event_id":"a","type":"return.rejected","ts":1,"order_id":1}"#,
            r#"{"event_id":"a","type":"refund.completed","ts":1,"order_id":1,"amount":0,"restock":false,"lines":[]}"#,
            r#"{"event_id":"a","type":"review.posted","ts":1,"review_id":1,"sku":1,"member_id":1,"rating":5}"#,
            r#"{"event_id":"a","type":"review.deleted","ts":1,"review_id":1}"#,
        ];
        for c in cases {
            let e = decode(c.as_bytes()).unwrap_or_else(|r| panic!("{c}: {r}"));
            assert!(
                c.contains(e.body.type_name()),
                "{c} decoded as {:?}",
                e.body
            );
        }
    }

    #[test]
    fn malformed_json() {
        for c in [
            "",
            "{",
            "[]",
            "1",
            "null",
            "{\"a\":NaN}",
            "{} {}",
            "{\"a\":1,}",
        ] {
            assert_eq!(reason(c), MalformedJson, "{c:?}");
        }
        assert_eq!(
            decode(&[b'{', 0xff, b'}']).unwrap_err().reason,
            MalformedJson
        );
    }

    #[test]
    fn check_order_is_event_id_type_ts_fields() {
        // Everything is wrong: event_id is reported first.
        assert_eq!(reason(r#"{"type":"nope","ts":-1}"#), MissingField);
        assert_eq!(reason(r#"{"event_id":1,"type":"nope"}"#), MistypedField);
        assert_eq!(reason(r#"{"event_id":"","type":"nope"}"#), OutOfRange);
        assert_eq!(
            reason(r#"{"event_id":"a","type":"nope","ts":-1}"#),
            UnknownType
        );
        assert_eq!(reason(r#"{"event_id":"a","ts":-1}"#), MissingField);
        assert_eq!(reason(r#"{"event_id":"a","type":null}"#), MistypedField);
        assert_eq!(
            reason(r#"{"event_id":"a","type":"order.shipped","ts":-1}"#),
            OutOfRange
        );
        assert_eq!(
            reason(r#"{"event_id":"a","type":"order.shipped","ts":1.0,"order_id":"x"}"#),
            MistypedField
        );
        assert_eq!(
            reason(r#"{"event_id":"a","type":"order.shipped","ts":1}"#),
            MissingField
        );
        // Fields in listed order: sku before qty.
        assert_eq!(
            reason(r#"{"event_id":"a","type":"stock.received","ts":1,"sku":0,"qty":"x"}"#),
            OutOfRange
        );
        assert_eq!(
            reason(r#"{"event_id":"a","type":"stock.received","ts":1,"sku":"1","qty":0}"#),
            MistypedField
        );
    }

    #[test]
    fn event_id_length_counts_scalar_values() {
        let ok = format!(
            r#"{{"event_id":"{}","type":"member.joined","ts":1,"member_id":1}}"#,
            "가".repeat(128)
        );
        assert!(decode(ok.as_bytes()).is_ok());
        let long = ok.replace("가\"", "가가\"");
        assert_eq!(reason(&long), OutOfRange);
    }

    #[test]
    fn integers_are_plain_json_integers() {
        let base = r#"{"event_id":"a","type":"stock.received","ts":1,"sku":1,"qty":QTY}"#;
        for (qty, want) in [
            ("1.0", Some(MistypedField)),
            ("1e2", Some(MistypedField)),
            ("true", Some(MistypedField)),
            ("null", Some(MistypedField)),
            ("\"5\"", Some(MistypedField)),
            ("0", Some(OutOfRange)),
            ("-3", Some(OutOfRange)),
            ("1000001", Some(OutOfRange)),
            (
                "123456789012345678901234567890123456789012345",
                Some(OutOfRange),
            ),
            ("1000000", None),
        ] {
            let text = base.replace("QTY", qty);
            match want {
                Some(r) => assert_eq!(reason(&text), r, "{qty}"),
                None => assert!(decode(text.as_bytes()).is_ok(), "{qty}"),
            }
        }
    }

    #[test]
    fn bounds() {
        let ts_max = format!(
            r#"{{"event_id":"a","type":"member.joined","ts":{},"member_id":{}}}"#,
            MAX_ID, MAX_ID
        );
        assert!(decode(ts_max.as_bytes()).is_ok());
        let over = ts_max.replacen(&MAX_ID.to_string(), &(MAX_ID + 1).to_string(), 1);
        assert_eq!(reason(&over), OutOfRange);
        assert_eq!(
            reason(r#"{"event_id":"a","type":"stock.adjusted","ts":1,"sku":1,"delta":0}"#),
            OutOfRange
        );
        assert_eq!(
            reason(
                r#"{"event_id":"a","type":"category.upserted","ts":1,"category_id":1,"name":"n","commission_bp":1501}"#
            ),
            OutOfRange
        );
        assert_eq!(
            reason(r#"{"event_id":"a","type":"payment.approved","ts":1,"order_id":1,"amount":0}"#),
            OutOfRange
        );
        assert_eq!(
            reason(
                r#"{"event_id":"a","type":"review.posted","ts":1,"review_id":1,"sku":1,"member_id":1,"rating":6}"#
            ),
            OutOfRange
        );
        let loc = format!(
            r#"{{"event_id":"a","type":"delivery.updated","ts":1,"order_id":1,"location":"{}"}}"#,
            "é".repeat(201)
        );
        assert_eq!(reason(&loc), OutOfRange);
    }

    #[test]
    fn order_lines() {
        let placed = |shipping: &str, lines: &str| {
            format!(
                r#"{{"event_id":"a","type":"order.placed","ts":1,"order_id":1,"member_id":1,"shipping":"{shipping}","lines":{lines}}}"#
            )
        };
        let line = r#"{"line_no":1,"sku":1,"qty":1,"unit_price":1}"#;
        assert_eq!(reason(&placed("drone", &format!("[{line}]"))), OutOfRange);
        assert_eq!(reason(&placed("rocket", "[]")), OutOfRange);
        assert_eq!(reason(&placed("rocket", "{}")), MistypedField);
        assert_eq!(reason(&placed("rocket", "[1]")), MistypedField);
        assert_eq!(
            reason(&placed("rocket", &format!("[{line},{line}]"))),
            OutOfRange
        );
        assert_eq!(
            reason(&placed("rocket", r#"[{"line_no":1,"sku":1,"qty":1}]"#)),
            MissingField
        );
        let many: Vec<String> = (1..=201)
            .map(|i| line.replace("\"line_no\":1", &format!("\"line_no\":{i}")))
            .collect();
        assert_eq!(
            reason(&placed("rocket", &format!("[{}]", many.join(",")))),
            OutOfRange
        );
        let ok: Vec<String> = many[..200].to_vec();
        assert!(decode(placed("rocket", &format!("[{}]", ok.join(","))).as_bytes()).is_ok());
    }

    #[test]
    fn unknown_fields_are_ignored_and_nested_json_still_checked() {
        assert!(decode(
            br#"{"event_id":"a","type":"member.joined","ts":1,"member_id":1,"extra":{"x":[1,2,{"y":null}]}}"#
        )
        .is_ok());
        assert_eq!(
            reason(r#"{"event_id":"a","type":"member.joined","ts":1,"member_id":1,"extra":[1,}"#),
            MalformedJson
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
