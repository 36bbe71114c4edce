-- PostgreSQL fills the derived tables of new exceptions a statement at a time from here on.
-- SQLite has no statement-level triggers and keeps its row triggers; this migration keeps the
-- two backends' versions in step.
SELECT 1;
