-- Bring values stored before they were bounded into their ranges, so that every stored value
-- parses and date arithmetic on it is always defined. A control's check interval is 1..365
-- days (out-of-range values take the nearest bound: the strictest reading of what was asked);
-- a remediation date falls in 1970..9999 (an impossible one is dropped).
UPDATE controls SET check_every_days = 365 WHERE check_every_days > 365;
UPDATE controls SET check_every_days = 1 WHERE check_every_days < 1;
UPDATE exceptions SET remediation_due = NULL
    WHERE remediation_due < '1970-01-01' OR remediation_due > '9999-12-31';

-- NUL characters, which SQLite stored and PostgreSQL refuses, are now refused at the edge;
-- those stored before are removed, so that every record parses and can be edited again. The
-- audit trail is left as written: its hashes cover it verbatim.
UPDATE exceptions SET
    title = replace(title, char(0), ''),
    policy_id = replace(policy_id, char(0), ''),
    business_unit = replace(business_unit, char(0), ''),
    justification = replace(justification, char(0), ''),
    business_impact = replace(business_impact, char(0), ''),
    requester = replace(requester, char(0), ''),
    on_behalf_of = replace(on_behalf_of, char(0), ''),
    risk_owner = replace(risk_owner, char(0), ''),
    remediation_plan = replace(remediation_plan, char(0), ''),
    renewal_justification = replace(renewal_justification, char(0), ''),
    search_text = replace(search_text, char(0), ''),
    control_ids = replace(control_ids, '\u0000', ''),
    assets = replace(assets, '\u0000', ''),
    external_refs = replace(external_refs, '\u0000', ''),
    tags = replace(tags, '\u0000', '');
UPDATE OR IGNORE exception_assets SET asset = replace(asset, char(0), '');
DELETE FROM exception_assets WHERE instr(asset, char(0)) > 0;
UPDATE OR IGNORE exception_control_ids SET control_id = replace(control_id, char(0), '');
DELETE FROM exception_control_ids WHERE instr(control_id, char(0)) > 0;
UPDATE OR IGNORE external_refs SET system = replace(system, char(0), ''), ext_id = replace(ext_id, char(0), '');
UPDATE controls SET
    description = replace(description, char(0), ''),
    evidence = replace(evidence, char(0), ''),
    verified_by = replace(verified_by, char(0), '');
UPDATE assessments SET
    rationale = replace(rationale, char(0), ''),
    assessed_by = replace(assessed_by, char(0), ''),
    threat_vectors = replace(threat_vectors, '\u0000', '');
UPDATE approvals SET approver = replace(approver, char(0), ''), comment = replace(comment, char(0), '');
UPDATE reviews SET reviewer = replace(reviewer, char(0), ''), comment = replace(comment, char(0), '');
UPDATE control_checks SET evidence = replace(evidence, char(0), ''), checker = replace(checker, char(0), '');
