//! Members (SPEC §5.2): 6-month spend, grades, Rocket WOW, grade-change alerts, the
//! points ledger and each member's recent orders.

use std::cmp::Reverse;

use shopflow_model::{Alert, EntryCause, Grade, MemberOrders, MemberView, Millis, PointsEntry};
use shopflow_state::LazyMap;
use timely::dataflow::channels::pact::Exchange;

use crate::effects::MemberMsg;
use crate::ordered::{ordered, Ctx, Timed};
use crate::output::Row;

/// How many recent orders a member's list keeps (SPEC §6).
pub const RECENT_ORDERS: usize = 20;

/// What each worker keeps per member it owns.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Member {
    /// 6-month spend now.
    spend: i128,
    /// Grade of `spend` at the last time it changed (members start BRONZE).
    grade: Grade,
    /// Key of the latest WOW event: (dataflow time, partition, offset).
    wow_event: Option<(Millis, i32, i64)>,
    /// Subscribed to Rocket WOW.
    wow: bool,
    /// (spend, wow) of the member row last written.
    shown: Option<(i128, bool)>,
    /// The newest orders by placement (ties: larger id first), at most [`RECENT_ORDERS`].
    recent: Vec<(Reverse<Millis>, Reverse<u64>)>,
}

/// Builds the member views from the member records (see [`MemberMsg`]).
///
/// At each time, a member's records apply in this order: spend changes, WOW events and
/// placements; then the member row, the grade-change alert and the recent-orders row are
/// written if they changed; then the points entries, a confirmation at the grade the
/// member has now (the rate is frozen: a later grade change does not rewrite it), a refund
/// after confirmation at the rate frozen at the confirmation.
pub fn members<'s>(records: Timed<'s, (u64, MemberMsg)>, ctx: &Ctx) -> Timed<'s, Row> {
    let by_member = Exchange::new(|((m, _), _): &((u64, MemberMsg), Millis)| *m);
    // Per member its state, and per confirmed order the points rate frozen at its
    // confirmation.
    // Both grow with the members and orders and are read back lazily after a restart.
    type State = (LazyMap<u64, Member>, LazyMap<u64, u32>);
    ordered(
        records,
        by_member,
        "Members",
        ctx,
        move |(members, rates): &mut State, time, records, out| {
            // Group by member, keeping each member's records in arrival order.
            records.sort_by_key(|(m, _)| *m);
            for group in records.chunk_by(|a, b| a.0 == b.0) {
                let member_id = group[0].0;
                let m = members.get_or_default(member_id);
                let mut recent_changed = false;
                for (_, msg) in group {
                    match msg {
                        MemberMsg::Joined | MemberMsg::Points { .. } => {}
                        MemberMsg::Wow {
                            partition,
                            offset,
                            on,
                        } => {
                            let key = (time, *partition, *offset);
                            if m.wow_event.is_none_or(|k| key > k) {
                                m.wow_event = Some(key);
                                m.wow = *on;
                            }
                        }
                        MemberMsg::Spend(amount) => m.spend += *amount as i128,
                        MemberMsg::Placed {
                            placed_at,
                            order_id,
                        } => {
                            let entry = (Reverse(*placed_at), Reverse(*order_id));
                            if let Err(at) = m.recent.binary_search(&entry) {
                                if at < RECENT_ORDERS {
                                    m.recent.insert(at, entry);
                                    m.recent.truncate(RECENT_ORDERS);
                                    recent_changed = true;
                                }
                            }
                        }
                    }
                }
                let grade = Grade::of_spend(m.spend);
                if grade != m.grade {
                    out.push((
                        Row::Alert(Alert::grade(member_id, time, m.grade, grade)),
                        time,
                    ));
                    m.grade = grade;
                }
                if m.shown != Some((m.spend, m.wow)) {
                    m.shown = Some((m.spend, m.wow));
                    out.push((
                        Row::Member(MemberView::new(member_id, m.spend, m.wow)),
                        time,
                    ));
                }
                if recent_changed {
                    let row = MemberOrders {
                        member_id,
                        order_ids: m.recent.iter().map(|(_, Reverse(id))| *id).collect(),
                    };
                    out.push((Row::MemberOrders(row), time));
                }
                for (_, msg) in group {
                    if let MemberMsg::Points {
                        order_id,
                        cause,
                        refund,
                        amount,
                    } = msg
                    {
                        let rate_bp = match cause {
                            EntryCause::Confirmed => {
                                let rate = m.grade.accrual_bp();
                                rates.insert(*order_id, rate);
                                rate
                            }
                            EntryCause::Refund => match rates.get(order_id) {
                                Some(rate) => *rate,
                                None => {
                                    debug_assert!(false, "a refund entry before its confirmation");
                                    continue;
                                }
                            },
                        };
                        out.push((
                            Row::Points(points_entry(
                                member_id, *order_id, *cause, *refund, *amount, rate_bp, time,
                            )),
                            time,
                        ));
                    }
                }
            }
        },
    )
}

/// One points entry (SPEC §5.2, §8): floor(amount × rate / 10000), negated for a refund.
fn points_entry(
    member_id: u64,
    order_id: u64,
    cause: EntryCause,
    refund: u32,
    amount: u64,
    rate_bp: u32,
    ts: Millis,
) -> PointsEntry {
    let points = (amount as i128 * rate_bp as i128 / 10_000) as i64;
    let (amount, points) = match cause {
        EntryCause::Confirmed => (amount as i64, points),
        EntryCause::Refund => (-(amount as i64), -points),
    };
    PointsEntry {
        id: PointsEntry::entry_id(order_id, cause, refund),
        member_id,
        order_id,
        cause,
        ts,
        rate_bp,
        amount,
        points,
    }
}
