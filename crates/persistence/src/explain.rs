//! `EXPLAIN` of any diesel query, on either backend: the index tests read the plans of the
//! statements the repository really runs, not of copies of them.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Text, Untyped};

use crate::connection::{Db, MultiBackend};
use crate::error::StoreError;

/// `EXPLAIN` (PostgreSQL) or `EXPLAIN QUERY PLAN` (SQLite) followed by the query.
struct Explain<Q> {
    query: Q,
    sqlite: bool,
}

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<MultiBackend>> QueryFragment<MultiBackend> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        out.push_sql(if self.sqlite { "EXPLAIN QUERY PLAN " } else { "EXPLAIN " });
        self.query.walk_ast(out.reborrow())
    }
}

impl<Q> Query for Explain<Q> {
    type SqlType = Untyped;
}

impl<Q> RunQueryDsl<Db> for Explain<Q> {}

#[derive(QueryableByName)]
struct PgLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct SqliteLine {
    #[diesel(sql_type = Text)]
    detail: String,
}

/// The plan of `query`, one line per node.
pub(crate) fn plan<Q: QueryFragment<MultiBackend>>(conn: &mut Db, query: Q) -> Result<String, StoreError> {
    let sqlite = matches!(conn, Db::Sqlite(_));
    let explain = Explain { query, sqlite };
    let lines: Vec<String> = if sqlite {
        explain.load::<SqliteLine>(conn)?.into_iter().map(|l| l.detail).collect()
    } else {
        conn.batch_execute("SET enable_seqscan = off")?;
        let lines = explain.load::<PgLine>(conn);
        conn.batch_execute("RESET enable_seqscan")?;
        lines?.into_iter().map(|l| l.line).collect()
    };
    Ok(lines.join("\n"))
}
