//! The order life cycle of SPEC §2 as a state machine over one order's events.
//!
//! [`OrderState::apply`] checks an event against the state and, only if it is allowed,
//! changes the state: a rejected event leaves the state exactly as it was. The validator
//! uses it to reject events, and the order-status dataflow folds accepted events through
//! it to derive the view.

use shopflow_model::{
    DeadLetterReason, EventBody, Millis, OrderLine, OrderStatus, OrderView, StatusChange,
};

use crate::decode::Rejection;

/// Where an order is in its life, apart from returns.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Stage {
    /// Placed, not paid.
    Placed,
    /// Payment approved.
    Paid,
    /// Payment failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Shipped.
    Shipped,
    /// Delivered.
    Delivered,
    /// Purchase confirmed.
    Confirmed,
}

impl Stage {
    fn status(self) -> OrderStatus {
        match self {
            Stage::Placed => OrderStatus::Placed,
            Stage::Paid => OrderStatus::Paid,
            Stage::Failed => OrderStatus::Failed,
            Stage::Cancelled => OrderStatus::Cancelled,
            Stage::Shipped => OrderStatus::Shipped,
            Stage::Delivered => OrderStatus::Delivered,
            Stage::Confirmed => OrderStatus::Confirmed,
        }
    }

    /// Whether the goods have left the fulfilment centre (SHIPPED or later).
    pub fn reached_shipped(self) -> bool {
        matches!(self, Stage::Shipped | Stage::Delivered | Stage::Confirmed)
    }

    /// Whether the order still holds stock in reserve (PLACED or PAID).
    pub fn reserves_stock(self) -> bool {
        matches!(self, Stage::Placed | Stage::Paid)
    }
}

/// One order line and how much of it was refunded.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LineState {
    /// The line as placed.
    pub line: OrderLine,
    /// Units refunded so far.
    pub refunded: u64,
    /// Units refunded with `restock` (back on hand).
    pub restocked: u64,
}

/// Everything the life cycle rules need to know about one order, plus the tracking view.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct OrderState {
    /// Order.
    pub order_id: u64,
    /// Buyer.
    pub member_id: u64,
    /// Stage apart from returns.
    pub stage: Stage,
    /// A return is open.
    pub return_open: bool,
    /// Lines in placement order.
    pub lines: Vec<LineState>,
    /// Amount charged (0 before payment).
    pub paid: u64,
    /// Effective time of `payment.approved`.
    pub paid_at: Option<Millis>,
    /// Money refunded so far.
    pub refunded_amount: u64,
    /// Every accepted refund, in log order.
    pub refunds: Vec<Refund>,
    /// Effective time of `order.confirmed`.
    pub confirmed_at: Option<Millis>,
    /// Dataflow (applied) time of `order.confirmed`: the time ledger entries are dated.
    pub confirmed_applied: Option<Millis>,
    /// How many of `refunds` came before the confirmation.
    pub confirmed_refunds: usize,
    /// Dataflow (applied) times of the order's steps.
    pub steps: Steps,
    /// Effective time of the latest accepted event.
    pub last_time: Millis,
    /// Last delivery location.
    pub location: Option<String>,
    /// Changes of the shown status.
    pub history: Vec<StatusChange>,
}

/// Dataflow (applied) times of an order's steps; `None` for a step not taken.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Steps {
    /// `order.placed`.
    pub placed: Millis,
    /// `payment.approved`.
    pub paid: Option<Millis>,
    /// `order.cancelled`.
    pub cancelled: Option<Millis>,
    /// `order.shipped`.
    pub shipped: Option<Millis>,
    /// `order.delivered`.
    pub delivered: Option<Millis>,
}

/// One accepted `refund.completed` of an order.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Refund {
    /// Effective time.
    pub time: Millis,
    /// Dataflow (applied) time: the time ledger entries are dated.
    pub applied: Millis,
    /// Money refunded.
    pub amount: u64,
    /// (index into the order's lines, units refunded).
    pub lines: Vec<(usize, u64)>,
}

fn lifecycle(detail: impl Into<String>) -> Rejection {
    Rejection::new(DeadLetterReason::Lifecycle, detail)
}

impl OrderState {
    /// The state after an accepted `order.placed` at effective time `time`.
    ///
    /// Returns `None` for any other event.
    pub fn placed(body: &EventBody, time: Millis) -> Option<OrderState> {
        let EventBody::OrderPlaced {
            order_id,
            member_id,
            lines,
            ..
        } = body
        else {
            return None;
        };
        Some(OrderState {
            order_id: *order_id,
            member_id: *member_id,
            stage: Stage::Placed,
            return_open: false,
            lines: lines
                .iter()
                .map(|&line| LineState {
                    line,
                    refunded: 0,
                    restocked: 0,
                })
                .collect(),
            paid: 0,
            paid_at: None,
            refunded_amount: 0,
            refunds: Vec::new(),
            confirmed_at: None,
            confirmed_applied: None,
            confirmed_refunds: 0,
            steps: Steps {
                placed: time,
                ..Steps::default()
            },
            last_time: time,
            location: None,
            history: vec![StatusChange {
                status: OrderStatus::Placed,
                ts: time,
            }],
        })
    }

    /// The effective time of an event sent at `ts` (SPEC §2): never before the order's
    /// previous accepted event.
    pub fn effective_time(&self, ts: Millis) -> Millis {
        ts.max(self.last_time)
    }

    /// Whether some quantity is not yet refunded.
    pub fn has_unrefunded(&self) -> bool {
        self.lines.iter().any(|l| l.refunded < l.line.qty)
    }

    /// The status shown to the storefront.
    pub fn status(&self) -> OrderStatus {
        if self.return_open {
            OrderStatus::ReturnRequested
        } else if !self.has_unrefunded() {
            OrderStatus::Refunded
        } else {
            self.stage.status()
        }
    }

    /// Checks `body` (an event of this order, not `order.placed`) at effective time `time`
    /// and applies it when allowed. On error the state is unchanged.
    pub fn apply(&mut self, body: &EventBody, time: Millis) -> Result<(), Rejection> {
        self.apply_at(body, time, time)
    }

    /// [`OrderState::apply`] for an event whose dataflow time `applied` may be later than
    /// its effective `time` (a late event applied at the frontier).
    pub fn apply_at(
        &mut self,
        body: &EventBody,
        time: Millis,
        applied: Millis,
    ) -> Result<(), Rejection> {
        let before = self.status();
        match body {
            EventBody::OrderPlaced { .. } => {
                return Err(lifecycle("order.placed for an order that exists"))
            }
            EventBody::PaymentApproved { amount, .. } => {
                self.expect_stage(&[Stage::Placed], "payment.approved")?;
                self.stage = Stage::Paid;
                self.paid = *amount;
                self.paid_at = Some(time);
                self.steps.paid = Some(applied);
            }
            EventBody::PaymentFailed { .. } => {
                self.expect_stage(&[Stage::Placed], "payment.failed")?;
                self.stage = Stage::Failed;
            }
            EventBody::OrderCancelled { .. } => {
                self.expect_stage(&[Stage::Placed, Stage::Paid], "order.cancelled")?;
                self.stage = Stage::Cancelled;
                self.steps.cancelled = Some(applied);
            }
            EventBody::OrderShipped { .. } => {
                self.expect_stage(&[Stage::Paid], "order.shipped")?;
                self.stage = Stage::Shipped;
                self.steps.shipped = Some(applied);
            }
            EventBody::DeliveryUpdated { location, .. } => {
                self.expect_stage(&[Stage::Shipped], "delivery.updated")?;
                self.location = Some(location.clone());
            }
            EventBody::OrderDelivered { .. } => {
                self.expect_stage(&[Stage::Shipped], "order.delivered")?;
                self.stage = Stage::Delivered;
                self.steps.delivered = Some(applied);
            }
            EventBody::OrderConfirmed { .. } => {
                self.expect_stage(&[Stage::Delivered], "order.confirmed")?;
                if self.return_open {
                    return Err(lifecycle("order.confirmed while a return is open"));
                }
                if !self.has_unrefunded() {
                    return Err(lifecycle("order.confirmed but everything was refunded"));
                }
                self.stage = Stage::Confirmed;
                self.confirmed_at = Some(time);
                self.confirmed_applied = Some(applied);
                self.confirmed_refunds = self.refunds.len();
            }
            EventBody::ReturnRequested { .. } => {
                self.expect_stage(&[Stage::Delivered, Stage::Confirmed], "return.requested")?;
                if self.return_open {
                    return Err(lifecycle("return.requested while a return is open"));
                }
                if !self.has_unrefunded() {
                    return Err(lifecycle("return.requested but everything was refunded"));
                }
                self.return_open = true;
            }
            EventBody::ReturnRejected { .. } => {
                if !self.return_open {
                    return Err(lifecycle("return.rejected with no open return"));
                }
                self.return_open = false;
            }
            EventBody::RefundCompleted {
                amount,
                restock,
                lines,
                ..
            } => {
                // Line existence is a bound of the event (out_of_range), checked first.
                let mut idx = Vec::with_capacity(lines.len());
                for rl in lines {
                    match self.lines.iter().position(|l| l.line.line_no == rl.line_no) {
                        Some(i) => idx.push(i),
                        None => {
                            return Err(Rejection::new(
                                DeadLetterReason::OutOfRange,
                                format!("refund line_no {} is not a line of the order", rl.line_no),
                            ))
                        }
                    }
                }
                if !self.return_open {
                    return Err(lifecycle("refund.completed with no open return"));
                }
                for (rl, &i) in lines.iter().zip(&idx) {
                    let l = &self.lines[i];
                    if rl.qty > l.line.qty - l.refunded {
                        return Err(lifecycle(format!(
                            "refund of {} units of line {} but only {} not yet refunded",
                            rl.qty,
                            rl.line_no,
                            l.line.qty - l.refunded
                        )));
                    }
                }
                if *amount > self.paid - self.refunded_amount {
                    return Err(lifecycle(format!(
                        "refund amount {amount} exceeds paid minus refunded ({})",
                        self.paid - self.refunded_amount
                    )));
                }
                for (rl, &i) in lines.iter().zip(&idx) {
                    self.lines[i].refunded += rl.qty;
                    if *restock {
                        self.lines[i].restocked += rl.qty;
                    }
                }
                self.refunded_amount += amount;
                self.refunds.push(Refund {
                    time,
                    applied,
                    amount: *amount,
                    lines: lines.iter().zip(&idx).map(|(rl, &i)| (i, rl.qty)).collect(),
                });
                self.return_open = false;
            }
            other => {
                return Err(lifecycle(format!(
                    "{} is not an order event",
                    other.type_name()
                )))
            }
        }
        self.last_time = time;
        let after = self.status();
        if after != before {
            self.history.push(StatusChange {
                status: after,
                ts: time,
            });
        }
        Ok(())
    }

    fn expect_stage(&self, allowed: &[Stage], what: &str) -> Result<(), Rejection> {
        if allowed.contains(&self.stage) {
            Ok(())
        } else {
            Err(lifecycle(format!(
                "{what} not allowed in {}",
                self.stage.status().as_str()
            )))
        }
    }

    /// The order's co-purchase basket (SPEC §5.4): payment time and the distinct SKUs of
    /// lines with unrefunded quantity, if the order is paid or later, not cancelled, failed
    /// or fully refunded, and holds at most `max_skus` SKUs. The 90-day window is the
    /// caller's.
    pub fn basket(&self, max_skus: usize) -> Option<(Millis, Vec<u64>)> {
        let paid_at = self.paid_at?;
        if !matches!(
            self.stage,
            Stage::Paid | Stage::Shipped | Stage::Delivered | Stage::Confirmed
        ) {
            return None;
        }
        let mut skus: Vec<u64> = self
            .lines
            .iter()
            .filter(|l| l.refunded < l.line.qty)
            .map(|l| l.line.sku)
            .collect();
        skus.sort_unstable();
        skus.dedup();
        if skus.is_empty() || skus.len() > max_skus {
            return None;
        }
        Some((paid_at, skus))
    }

    /// Units of line `i` not refunded when the order was confirmed (its settled quantity).
    pub fn settled_qty(&self, i: usize) -> u64 {
        let before: u64 = self.refunds[..self.confirmed_refunds]
            .iter()
            .flat_map(|r| r.lines.iter())
            .filter(|(l, _)| *l == i)
            .map(|(_, q)| q)
            .sum();
        self.lines[i].line.qty - before
    }

    /// The order's contribution to its member's 6-month spend (SPEC §5.2) while its
    /// payment is in the window: paid − refunded, or 0 once cancelled after payment.
    /// `None` before payment.
    pub fn spend(&self) -> Option<(Millis, i128)> {
        let p = self.paid_at?;
        if self.stage == Stage::Cancelled {
            return Some((p, 0));
        }
        Some((p, self.paid as i128 - self.refunded_amount as i128))
    }

    /// The tracking view of the order.
    pub fn view(&self) -> OrderView {
        OrderView {
            order_id: self.order_id,
            member_id: self.member_id,
            status: self.status(),
            location: self.location.clone(),
            history: self.history.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopflow_model::{RefundLine, Shipping};

    fn placed() -> OrderState {
        let body = EventBody::OrderPlaced {
            order_id: 1,
            member_id: 2,
            shipping: Shipping::Rocket,
            lines: vec![
                OrderLine {
                    line_no: 1,
                    sku: 10,
                    qty: 2,
                    unit_price: 1000,
                },
                OrderLine {
                    line_no: 2,
                    sku: 11,
                    qty: 1,
                    unit_price: 500,
                },
            ],
        };
        OrderState::placed(&body, 100).unwrap()
    }

    #[test]
    fn happy_path_and_return() {
        let mut o = placed();
        let steps = [
            EventBody::PaymentApproved {
                order_id: 1,
                amount: 2500,
            },
            EventBody::OrderShipped { order_id: 1 },
            EventBody::DeliveryUpdated {
                order_id: 1,
                location: "hub".into(),
            },
            EventBody::OrderDelivered { order_id: 1 },
            EventBody::OrderConfirmed { order_id: 1 },
            EventBody::ReturnRequested {
                order_id: 1,
                reason: "x".into(),
            },
        ];
        for (i, s) in steps.iter().enumerate() {
            o.apply(s, 200 + i as u64).unwrap();
        }
        assert_eq!(o.status(), OrderStatus::ReturnRequested);
        let too_much = EventBody::RefundCompleted {
            order_id: 1,
            amount: 2501,
            restock: true,
            lines: vec![],
        };
        let before = o.clone();
        assert_eq!(
            o.apply(&too_much, 300).unwrap_err().reason,
            DeadLetterReason::Lifecycle
        );
        assert_eq!(o, before, "a rejected event must not change the state");
        let bad_line = EventBody::RefundCompleted {
            order_id: 1,
            amount: 1,
            restock: true,
            lines: vec![RefundLine { line_no: 9, qty: 1 }],
        };
        assert_eq!(
            o.apply(&bad_line, 300).unwrap_err().reason,
            DeadLetterReason::OutOfRange
        );
        let all = EventBody::RefundCompleted {
            order_id: 1,
            amount: 2500,
            restock: true,
            lines: vec![
                RefundLine { line_no: 1, qty: 2 },
                RefundLine { line_no: 2, qty: 1 },
            ],
        };
        o.apply(&all, 300).unwrap();
        assert_eq!(o.status(), OrderStatus::Refunded);
        let statuses: Vec<_> = o.history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            [
                OrderStatus::Placed,
                OrderStatus::Paid,
                OrderStatus::Shipped,
                OrderStatus::Delivered,
                OrderStatus::Confirmed,
                OrderStatus::ReturnRequested,
                OrderStatus::Refunded
            ]
        );
        assert_eq!(o.location.as_deref(), Some("hub"));
        // Nothing left to return.
        let again = EventBody::ReturnRequested {
            order_id: 1,
            reason: "x".into(),
        };
        assert_eq!(
            o.apply(&again, 400).unwrap_err().reason,
            DeadLetterReason::Lifecycle
        );
    }

    #[test]
    fn illegal_transitions() {
        let mut o = placed();
        for body in [
            EventBody::OrderShipped { order_id: 1 },
            EventBody::OrderDelivered { order_id: 1 },
            EventBody::OrderConfirmed { order_id: 1 },
            EventBody::ReturnRejected { order_id: 1 },
            EventBody::DeliveryUpdated {
                order_id: 1,
                location: "x".into(),
            },
        ] {
            assert_eq!(
                o.apply(&body, 1).unwrap_err().reason,
                DeadLetterReason::Lifecycle,
                "{body:?}"
            );
        }
        o.apply(&EventBody::PaymentFailed { order_id: 1 }, 1)
            .unwrap();
        assert_eq!(
            o.apply(&EventBody::OrderCancelled { order_id: 1 }, 1)
                .unwrap_err()
                .reason,
            DeadLetterReason::Lifecycle
        );
    }
}
