-- Bring values stored before they were bounded into their ranges, so that every stored value
-- parses and date arithmetic on it is always defined. A control's check interval is 1..365
-- days (out-of-range values take the nearest bound: the strictest reading of what was asked);
-- a remediation date falls in 1970..9999 (an impossible one is dropped).
UPDATE controls SET check_every_days = 365 WHERE check_every_days > 365;
UPDATE controls SET check_every_days = 1 WHERE check_every_days < 1;
UPDATE exceptions SET remediation_due = NULL
    WHERE remediation_due < '1970-01-01' OR remediation_due > '9999-12-31';

-- NUL characters are now refused at the edge on both backends. PostgreSQL never stored one
-- (it refuses them), so, unlike SQLite, there is nothing to remove here.
