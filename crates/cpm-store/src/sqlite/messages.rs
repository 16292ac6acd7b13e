//! The SQL of the store operations over the `messages` and `bindings` tables (migration 2).
//! Each function runs on the connection (or transaction) it is given; the backend wraps a
//! batch of them in one transaction.

use rusqlite::types::{Type, Value};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::ops::{
    BindingRecord, DeferredQuota, DeliveryState, Direction, HistoryQuery, MessageRecord,
    QuotaExceeded,
};

/// The deferred queue's condition, as the partial indexes `messages_deferred`,
/// `messages_expiry` and `messages_deferred_usage` are defined: a query uses them only if its `WHERE` holds these very
/// terms (literals, not parameters).
macro_rules! deferred {
    () => {
        "direction = 'received' AND state = 'pending'"
    };
}

/// The `messages` columns of a [`MessageRecord`], in the order [`read_record`] reads them.
macro_rules! record_columns {
    () => {
        "owner, direction, peer, conversation_id, contribution_id, in_reply_to, message_id, \
         sender, recipient, content_type, body, disposition, created_at_ms, expires_at_ms, \
         state, state_at_ms"
    };
}

/// A value in the database that no build of CPM writes.
#[derive(Debug, thiserror::Error)]
#[error("unexpected {what} {value:?} in the database")]
struct BadValue {
    what: &'static str,
    value: String,
}

fn conversion(
    column: usize,
    kind: Type,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, kind, Box::new(error))
}

/// A time for SQL. Records were validated (at most [`crate::MAX_TIME_MS`]); a query bound
/// beyond it is clamped, which selects the same rows since no stored time exceeds it.
fn sql_time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn read_time(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|e| conversion(column, Type::Integer, e))
}

fn read_direction(row: &Row<'_>, column: usize) -> rusqlite::Result<Direction> {
    let text: String = row.get(column)?;
    Direction::parse(&text).ok_or_else(|| {
        conversion(
            column,
            Type::Text,
            BadValue {
                what: "direction",
                value: text.clone(),
            },
        )
    })
}

fn read_state(row: &Row<'_>, column: usize) -> rusqlite::Result<DeliveryState> {
    let text: String = row.get(column)?;
    DeliveryState::parse(&text).ok_or_else(|| {
        conversion(
            column,
            Type::Text,
            BadValue {
                what: "delivery state",
                value: text.clone(),
            },
        )
    })
}

/// Splits a list stored joined by `sep` (the empty text is the empty list).
fn split_list(text: &str, sep: char) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(sep).map(str::to_owned).collect()
    }
}

/// Reads [`record_columns!`] starting at column `at`.
fn read_record_at(row: &Row<'_>, at: usize) -> rusqlite::Result<MessageRecord> {
    let disposition: String = row.get(at + 11)?;
    let expires_at_ms = match row.get::<_, Option<i64>>(at + 13)? {
        None => None,
        Some(_) => Some(read_time(row, at + 13)?),
    };
    Ok(MessageRecord {
        owner: row.get(at)?,
        direction: read_direction(row, at + 1)?,
        peer: row.get(at + 2)?,
        conversation_id: row.get(at + 3)?,
        contribution_id: row.get(at + 4)?,
        in_reply_to: row.get(at + 5)?,
        message_id: row.get(at + 6)?,
        sender: row.get(at + 7)?,
        recipient: row.get(at + 8)?,
        content_type: row.get(at + 9)?,
        body: row.get(at + 10)?,
        disposition: split_list(&disposition, ','),
        created_at_ms: read_time(row, at + 12)?,
        expires_at_ms,
        state: read_state(row, at + 14)?,
        state_at_ms: read_time(row, at + 15)?,
    })
}

fn read_record(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    read_record_at(row, 0)
}

/// [`crate::StoreOp::AppendMessage`]: `(duplicate, state of the stored record)`.
pub(super) fn append(
    conn: &Connection,
    r: &MessageRecord,
) -> rusqlite::Result<(bool, DeliveryState)> {
    let inserted = conn
        .prepare_cached(concat!(
            "INSERT INTO messages (",
            record_columns!(),
            ", body_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT DO NOTHING"
        ))?
        .execute(params![
            r.owner,
            r.direction.as_str(),
            r.peer,
            r.conversation_id,
            r.contribution_id,
            r.in_reply_to,
            r.message_id,
            r.sender,
            r.recipient,
            r.content_type,
            r.body,
            r.disposition.join(","),
            sql_time(r.created_at_ms),
            r.expires_at_ms.map(sql_time),
            r.state.as_str(),
            sql_time(r.state_at_ms),
            i64::try_from(r.body.len()).unwrap_or(i64::MAX),
        ])?;
    if inserted == 1 {
        return Ok((false, r.state));
    }
    let state = stored_state(conn, r)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    Ok((true, state))
}

/// The state of the stored record with `r`'s key `(owner, message_id, direction, peer)`.
fn stored_state(conn: &Connection, r: &MessageRecord) -> rusqlite::Result<Option<DeliveryState>> {
    conn.prepare_cached(
        "SELECT state FROM messages \
         WHERE owner = ?1 AND message_id = ?2 AND direction = ?3 AND peer = ?4",
    )?
    .query_row(
        params![r.owner, r.message_id, r.direction.as_str(), r.peer],
        |row| read_state(row, 0),
    )
    .optional()
}

/// [`crate::StoreOp::AppendDeferred`]: as [`append`] when the record is new and fits the
/// recipient's queue; `Ok(Err(..))` when it would not (nothing written). The queue's size
/// comes from [`QUEUE_USAGE`]; the backend's transactions are `BEGIN IMMEDIATE`, so no other
/// writer appends between the check and the insert.
pub(super) fn append_deferred(
    conn: &Connection,
    r: &MessageRecord,
    quota: &DeferredQuota,
) -> rusqlite::Result<Result<(bool, DeliveryState), QuotaExceeded>> {
    // A duplicate is answered as one, whatever the queue holds (a resend after a crash must
    // get the answer its first copy got).
    if let Some(state) = stored_state(conn, r)? {
        return Ok(Ok((true, state)));
    }
    let (count, bytes, from_sender): (i64, i64, i64) = conn
        .prepare_cached(QUEUE_USAGE)?
        .query_row(params![r.owner, r.peer], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    if let Err(e) = quota.check(r.body.len() as u64, n(count), n(bytes), n(from_sender)) {
        return Ok(Err(e));
    }
    append(conn, r).map(Ok)
}

/// What `owner`'s deferred queue holds (messages, bytes, messages from `?2`), read from the
/// covering partial index `messages_deferred_usage` (migration 3): one range of the owner's
/// queued index entries, no table rows.
pub(super) const QUEUE_USAGE: &str = concat!(
    "SELECT count(*), coalesce(sum(body_bytes), 0), count(CASE WHEN peer = ?2 THEN 1 END) \
     FROM messages WHERE owner = ?1 AND ",
    deferred!()
);

/// [`crate::StoreOp::UpdateState`]: how many records changed.
pub(super) fn update_state(
    conn: &Connection,
    owner: &str,
    peer: Option<&str>,
    direction: Option<Direction>,
    message_id: &str,
    state: DeliveryState,
    at_ms: u64,
) -> rusqlite::Result<u32> {
    let mut sql =
        String::from("SELECT seq, state FROM messages WHERE owner = ?1 AND message_id = ?2");
    let mut values = vec![
        Value::Text(owner.to_owned()),
        Value::Text(message_id.to_owned()),
    ];
    if let Some(peer) = peer {
        values.push(Value::Text(peer.to_owned()));
        sql.push_str(&format!(" AND peer = ?{}", values.len()));
    }
    if let Some(direction) = direction {
        values.push(Value::Text(direction.as_str().to_owned()));
        sql.push_str(&format!(" AND direction = ?{}", values.len()));
    }
    // The transition rule is `DeliveryState::may_become`, applied here rather than in SQL
    // so that both backends share one definition.
    let candidates = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), |row| {
            Ok((row.get::<_, i64>(0)?, read_state(row, 1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut update =
        conn.prepare_cached("UPDATE messages SET state = ?1, state_at_ms = ?2 WHERE seq = ?3")?;
    let mut changed = 0u32;
    for (seq, current) in candidates {
        if current.may_become(state) {
            let n = update.execute(params![state.as_str(), sql_time(at_ms), seq])?;
            changed = changed.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    Ok(changed)
}

/// [`crate::StoreOp::PendingDeferred`]: owner, limit.
pub(super) const PENDING_DEFERRED: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM messages WHERE owner = ?1 AND ",
    deferred!(),
    " ORDER BY seq LIMIT ?2"
);

/// [`crate::StoreOp::ExpireDeferred`], the read: now, limit.
pub(super) const EXPIRE_DUE: &str = concat!(
    "SELECT seq, ",
    record_columns!(),
    " FROM messages WHERE ",
    deferred!(),
    " AND expires_at_ms IS NOT NULL AND expires_at_ms <= ?1 \
     ORDER BY expires_at_ms, seq LIMIT ?2"
);

/// [`crate::StoreOp::PendingDeferred`].
pub(super) fn pending_deferred(
    conn: &Connection,
    owner: &str,
    limit: usize,
) -> rusqlite::Result<Vec<MessageRecord>> {
    conn.prepare_cached(PENDING_DEFERRED)?
        .query_map(params![owner, sql_limit(limit)], read_record)?
        .collect()
}

/// [`crate::StoreOp::ExpireDeferred`]: the records that became `Failed`, earliest expiry
/// first.
pub(super) fn expire_deferred(
    conn: &Connection,
    now_ms: u64,
    limit: usize,
) -> rusqlite::Result<Vec<MessageRecord>> {
    let due = conn
        .prepare_cached(EXPIRE_DUE)?
        .query_map(params![sql_time(now_ms), sql_limit(limit)], |row| {
            Ok((row.get::<_, i64>(0)?, read_record_at(row, 1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut update =
        conn.prepare_cached("UPDATE messages SET state = ?1, state_at_ms = ?2 WHERE seq = ?3")?;
    let mut records = Vec::with_capacity(due.len());
    for (seq, mut record) in due {
        update.execute(params![
            DeliveryState::Failed.as_str(),
            sql_time(now_ms),
            seq
        ])?;
        record.state = DeliveryState::Failed;
        record.state_at_ms = now_ms;
        records.push(record);
    }
    Ok(records)
}

/// [`crate::StoreOp::History`]: the newest `limit` matches, oldest first.
pub(super) fn history(conn: &Connection, q: &HistoryQuery) -> rusqlite::Result<Vec<MessageRecord>> {
    // Nothing is stored that late.
    if q.since_ms.is_some_and(|since| since > crate::MAX_TIME_MS) {
        return Ok(Vec::new());
    }
    let (sql, values) = history_sql(q);
    let mut records = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), read_record)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    records.reverse();
    Ok(records)
}

/// The SQL of a history query, newest first, and its parameters. Only the filters present go
/// into the SQL, so that the planner can use the index of each (`messages_history_*`).
pub(super) fn history_sql(q: &HistoryQuery) -> (String, Vec<Value>) {
    let mut sql = String::from(concat!(
        "SELECT ",
        record_columns!(),
        " FROM messages WHERE owner = ?1"
    ));
    let mut values = vec![Value::Text(q.owner.clone())];
    let mut filter = |sql: &mut String, clause: &str, value: Value| {
        values.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", values.len()));
    };
    if let Some(with) = &q.with {
        filter(&mut sql, "peer =", Value::Text(with.clone()));
    }
    if let Some(conversation) = &q.conversation_id {
        filter(
            &mut sql,
            "conversation_id =",
            Value::Text(conversation.clone()),
        );
    }
    if let Some(since) = q.since_ms {
        filter(
            &mut sql,
            "created_at_ms >=",
            Value::Integer(sql_time(since)),
        );
    }
    if let Some(until) = q.until_ms.filter(|&t| t <= crate::MAX_TIME_MS) {
        filter(&mut sql, "created_at_ms <", Value::Integer(sql_time(until)));
    }
    values.push(Value::Integer(sql_limit(q.limit)));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", values.len()));
    (sql, values)
}

/// [`crate::StoreOp::SaveBinding`].
pub(super) fn save_binding(conn: &Connection, b: &BindingRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO bindings (aor, key, contact, destination, path, expires_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (aor, key) DO UPDATE SET contact = excluded.contact, \
         destination = excluded.destination, path = excluded.path, \
         expires_at_ms = excluded.expires_at_ms",
    )?
    .execute(params![
        b.aor,
        b.key,
        b.contact,
        b.destination,
        b.path.join("\n"),
        sql_time(b.expires_at_ms)
    ])?;
    Ok(())
}

/// [`crate::StoreOp::RemoveBinding`].
pub(super) fn remove_binding(conn: &Connection, aor: &str, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND key = ?2")?
        .execute(params![aor, key])?;
    Ok(())
}

/// [`crate::StoreOp::LoadBindings`], ordered by `(aor, key)`.
pub(super) fn load_bindings(
    conn: &Connection,
    now_ms: u64,
) -> rusqlite::Result<Vec<BindingRecord>> {
    conn.prepare_cached(
        "SELECT aor, key, contact, destination, path, expires_at_ms FROM bindings \
         WHERE expires_at_ms > ?1 ORDER BY aor, key",
    )?
    .query_map(params![sql_time(now_ms)], |row| {
        let path: String = row.get(4)?;
        Ok(BindingRecord {
            aor: row.get(0)?,
            key: row.get(1)?,
            contact: row.get(2)?,
            destination: row.get(3)?,
            path: split_list(&path, '\n'),
            expires_at_ms: read_time(row, 5)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deferred_literals_are_the_stored_values() {
        let expect = format!(
            "direction = '{}' AND state = '{}'",
            Direction::Received.as_str(),
            DeliveryState::Pending.as_str()
        );
        assert_eq!(deferred!(), expect);
    }
}
