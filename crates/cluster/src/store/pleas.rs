//! Pleas (schema version 9): reversals a node admitted in terminals' names, held in the database by
//! that node while it waits for them, and left for the other nodes when it ends before their outcome
//! was committed (see `engine::Plea`).

use std::time::SystemTime;

use engine::Plea;

use super::Store;
use crate::Error;

/// The pleas' keys, column by column, for `unnest`.
fn columns(pleas: &[Plea]) -> (Vec<&str>, Vec<&str>, Vec<i32>, Vec<i16>) {
    let terminals = pleas.iter().map(|p| p.terminal.as_str()).collect();
    let merchants = pleas.iter().map(|p| p.merchant.as_str()).collect();
    let stans = pleas.iter().map(|p| p.stan as i32).collect();
    let days = pleas.iter().map(|p| p.date as i16).collect();
    (terminals, merchants, stans, days)
}

impl Store {
    /// Leaves `pleas` for the other nodes. Not behind the fence: a node that leaves them has usually
    /// lost its epoch, which is why it ends. A plea already there keeps its taker, but for this node's
    /// hold on it, which ends; and it keeps the later 91 (the terminal's last word).
    pub async fn plead(&self, pleas: &[Plea]) -> Result<(), Error> {
        let (terminals, merchants, stans, days) = columns(pleas);
        let refused: Vec<SystemTime> = pleas.iter().map(|p| p.refused_at).collect();
        self.client
            .execute(
                "INSERT INTO pleas (terminal, merchant, stan, day, refused_at, left_by)
                 SELECT t, m, s, d, r, $6
                 FROM unnest($1::text[], $2::text[], $3::integer[], $4::smallint[],
                             $5::timestamptz[]) AS p(t, m, s, d, r)
                 ON CONFLICT (terminal, merchant, stan, day) DO UPDATE
                     SET refused_at = greatest(pleas.refused_at, excluded.refused_at),
                         taken_by = nullif(pleas.taken_by, $6),
                         taken_epoch = CASE WHEN pleas.taken_by = $6 THEN NULL ELSE pleas.taken_epoch END",
                &[&terminals, &merchants, &stans, &days, &refused, &self.node],
            )
            .await?;
        Ok(())
    }

    /// Holds `pleas` of this node's own: taken on by it under its current epoch, so that they are free
    /// for the other nodes once it lapses or is fenced (a node killed, or its machine lost, while it
    /// waits out a terminal's patience; see `engine::Config::terminal_patience`). A plea already there
    /// keeps its taker, and the later 91.
    pub async fn hold_pleas(&self, pleas: &[Plea]) -> Result<(), Error> {
        let (terminals, merchants, stans, days) = columns(pleas);
        let refused: Vec<SystemTime> = pleas.iter().map(|p| p.refused_at).collect();
        self.client
            .execute(
                "INSERT INTO pleas (terminal, merchant, stan, day, refused_at, left_by, taken_by, taken_epoch)
                 SELECT t, m, s, d, r, $6, $6, (SELECT epoch FROM nodes WHERE node = $6)
                 FROM unnest($1::text[], $2::text[], $3::integer[], $4::smallint[],
                             $5::timestamptz[]) AS p(t, m, s, d, r)
                 ON CONFLICT (terminal, merchant, stan, day) DO UPDATE
                     SET refused_at = greatest(pleas.refused_at, excluded.refused_at)",
                &[&terminals, &merchants, &stans, &days, &refused, &self.node],
            )
            .await?;
        Ok(())
    }

    /// Takes on up to `most` pleas no live node has (none took them on, or the one that did lost its
    /// lease or its epoch since), oldest first, while this node's own lease is live.
    pub async fn take_pleas(&self, most: i64) -> Result<Vec<Plea>, Error> {
        let rows = self
            .client
            .query(
                "UPDATE pleas p SET taken_by = $1, taken_epoch = $2
                 FROM (SELECT f.terminal, f.merchant, f.stan, f.day FROM pleas f
                       LEFT JOIN nodes t ON t.node = f.taken_by
                       WHERE f.taken_by IS NULL OR t.lease_until < now() OR t.epoch <> f.taken_epoch
                       ORDER BY f.left_at LIMIT $3
                       FOR UPDATE OF f SKIP LOCKED) free
                 WHERE (p.terminal, p.merchant, p.stan, p.day)
                       = (free.terminal, free.merchant, free.stan, free.day)
                   AND EXISTS (SELECT 1 FROM nodes
                               WHERE node = $1 AND epoch = $2 AND lease_until > now())
                 RETURNING p.terminal, p.merchant, p.stan, p.day, p.refused_at",
                &[&self.node, &self.epoch, &most],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Plea {
                terminal: r.get(0),
                merchant: r.get(1),
                stan: r.get::<_, i32>(2) as u32,
                date: r.get::<_, i16>(3) as u16,
                refused_at: r.get(4),
            })
            .collect())
    }

    /// Deletes `pleas`, whose reversals' outcomes are committed: not one under the same key for a
    /// later 91, which is still to be decided.
    pub async fn settle_pleas(&self, pleas: &[Plea]) -> Result<(), Error> {
        let (terminals, merchants, stans, days) = columns(pleas);
        let refused: Vec<SystemTime> = pleas.iter().map(|p| p.refused_at).collect();
        self.client
            .execute(
                "DELETE FROM pleas p
                 USING unnest($1::text[], $2::text[], $3::integer[], $4::smallint[],
                              $5::timestamptz[]) AS s(t, m, st, d, r)
                 WHERE (p.terminal, p.merchant, p.stan, p.day) = (s.t, s.m, s.st, s.d)
                   AND p.refused_at <= s.r",
                &[&terminals, &merchants, &stans, &days, &refused],
            )
            .await?;
        Ok(())
    }
}
