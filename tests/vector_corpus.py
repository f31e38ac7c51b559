"""A small GRC corpus for vector search tests: 40 events of two tenants, and 10 queries with the
event a compliance analyst would want first. The tenants deliberately share look-alike events
(vendor access, ransomware, backups) so a cross-tenant leak would show up in the results."""
from __future__ import annotations

from typing import Any

BANK = "acme-bank"
HEALTH = "globex-health"


def _ev(key: str, tenant: str, event_type: str, entity_type: str, entity_id: str, day: int,
        data: dict[str, Any], action: str = "CREATE", source: str = "ARCHER_GRC") -> dict[str, Any]:
    return {
        "eventId": f"evt-{key}", "tenantId": tenant, "eventType": event_type, "source": source,
        "action": action, "entityType": entity_type, "entityId": entity_id, "data": data,
        "metadata": {}, "timestamp": f"2026-10-{day:02d}T09:00:00.000Z",
        "ingestedAt": f"2026-10-{day:02d}T09:00:01.000Z", "schemaVersion": "1.0", "correlationId": f"c-{key}",
    }


CORPUS: list[dict[str, Any]] = [
    # ---- acme-bank ----------------------------------------------------------------------
    _ev("a1", BANK, "RISK_CREATED", "risk", "R-101", 1, {
        "title": "Former vendor retains privileged access after contract end",
        "description": "Accounts of a former payment processor are still active in the core banking system; "
                       "access was not revoked at offboarding.",
        "severity": "high", "category": "third-party"}),
    _ev("a2", BANK, "CONTROL_FAILED", "control", "C-210", 2, {
        "name": "Quarterly vendor access review",
        "description": "Review found 14 vendor and contractor accounts without business justification and "
                       "stale external credentials.",
        "status": "failed", "owner": "IT security"}, action="TEST"),
    _ev("a3", BANK, "CONTROL_TESTED", "control", "C-305", 3, {
        "name": "Database backup restoration test",
        "description": "Monthly restore of the core ledger backup completed within the 4 hour recovery time objective.",
        "result": "passed"}, action="TEST"),
    _ev("a4", BANK, "ASSESSMENT_OVERDUE", "assessment", "A-77", 4, {
        "title": "Annual anti-money laundering (AML) risk assessment",
        "description": "The assessment is 30 days past its due date.", "owner": "Financial crime"}),
    _ev("a5", BANK, "COMPLIANCE_GAP_DETECTED", "requirement", "PCI-3.4", 5, {
        "title": "PCI DSS 3.4 cardholder data stored unencrypted",
        "description": "Full card numbers (PAN) are stored in clear text in the reporting database.",
        "framework": "PCI DSS", "severity": "critical"}, action="DETECT"),
    _ev("a6", BANK, "RISK_STATUS_CHANGED", "risk", "R-88", 6, {
        "title": "Ransomware attack on branch network",
        "description": "Endpoint detection and response deployed to all branch workstations.",
        "previousStatus": "open", "status": "mitigated"}, action="STATUS_CHANGE"),
    _ev("a7", BANK, "POLICY_VIOLATION", "policy", "POL-DLP", 7, {
        "title": "Customer account list emailed to a personal mailbox",
        "description": "An employee sent a spreadsheet of customer accounts to a personal Gmail address.",
        "severity": "high"}, action="DETECT"),
    _ev("a8", BANK, "CONTROL_CREATED", "control", "C-400", 8, {
        "name": "Multi-factor authentication for remote VPN access",
        "description": "All remote connections to the VPN require a second factor.", "controlType": "preventive"}),
    _ev("a9", BANK, "ASSESSMENT_COMPLETED", "assessment", "A-80", 9, {
        "title": "GDPR data protection impact assessment for the mobile banking app",
        "result": "completed with 3 findings", "framework": "GDPR"}),
    _ev("a10", BANK, "RISK_UPDATED", "risk", "R-120", 10, {
        "title": "Interest rate risk in the mortgage portfolio",
        "changes": {"likelihood": {"old": "medium", "new": "high"}}}, action="UPDATE"),
    _ev("a11", BANK, "COMPLIANCE_STATUS_CHANGED", "requirement", "SOX-404", 11, {
        "title": "SOX 404 internal control over financial reporting",
        "previousStatus": "non-compliant", "status": "compliant"}, action="STATUS_CHANGE"),
    _ev("a12", BANK, "CONTROL_FAILED", "control", "C-512", 12, {
        "name": "Segregation of duties in payment approval",
        "description": "The same user created and approved wire transfers above 1 million dollars.",
        "status": "failed"}, action="TEST"),
    _ev("a13", BANK, "RISK_CREATED", "risk", "R-130", 13, {
        "title": "Key person dependency on a single mainframe engineer",
        "description": "Only one engineer can maintain the COBOL settlement jobs."}),
    _ev("a14", BANK, "DATA_ANOMALY", "system", "online-banking", 14, {
        "title": "Spike in failed logins from foreign IP addresses",
        "description": "Failed login attempts on online banking rose tenfold, mostly from overseas addresses."},
        action="DETECT", source="BACKEND_API"),
    _ev("a15", BANK, "ASSESSMENT_STARTED", "assessment", "A-90", 15, {
        "title": "Business continuity plan review for data center failover"}),
    _ev("a16", BANK, "SYSTEM_ERROR", "system", "sanctions-screening", 16, {
        "message": "Nightly sanctions screening batch job failed to start", "errorCode": "JOB_TIMEOUT"},
        action="NOTIFY", source="BACKEND_API"),
    _ev("a17", BANK, "CONTROL_UPDATED", "control", "C-210", 17, {
        "name": "Quarterly vendor access review",
        "changes": [{"field": "frequency", "old": "quarterly", "new": "monthly"}]}, action="UPDATE"),
    _ev("a18", BANK, "RISK_DELETED", "risk", "R-99", 18, {
        "title": "Legacy fax server exposure", "reason": "Server decommissioned."}, action="DELETE"),
    _ev("a19", BANK, "POLICY_VIOLATION", "policy", "POL-CLEAN-DESK", 19, {
        "title": "Clean desk policy violation",
        "description": "Printed customer statements were left unattended overnight."}, action="DETECT"),
    _ev("a20", BANK, "COMPLIANCE_GAP_DETECTED", "requirement", "REC-7Y", 20, {
        "title": "No records retention schedule for loan files",
        "description": "Loan files must be kept for seven years; no retention schedule exists."}, action="DETECT"),
    _ev("a21", BANK, "CONTROL_TESTED", "control", "C-620", 21, {
        "name": "Penetration test of the internet banking portal",
        "result": "2 medium findings", "vendor": "external testing firm"}, action="TEST"),
    _ev("a22", BANK, "RISK_CREATED", "risk", "R-140", 22, {
        "title": "Credit scoring model not validated since 2022",
        "category": "model risk"}),
    # ---- globex-health ------------------------------------------------------------------
    _ev("b1", HEALTH, "RISK_CREATED", "risk", "HR-1", 1, {
        "title": "Medical device supplier has remote access without MFA",
        "description": "The infusion pump vendor connects to the hospital network with a shared password.",
        "severity": "high"}),
    _ev("b2", HEALTH, "CONTROL_FAILED", "control", "HC-2", 2, {
        "name": "Vendor access review for clinical systems",
        "description": "Orphaned vendor accounts found on the lab information system.", "status": "failed"},
        action="TEST"),
    _ev("b3", HEALTH, "COMPLIANCE_GAP_DETECTED", "requirement", "HIPAA-164.312", 3, {
        "title": "Patient records sent to billing partner without encryption",
        "description": "Claims files with protected health information travel over plain FTP.",
        "framework": "HIPAA"}, action="DETECT"),
    _ev("b4", HEALTH, "ASSESSMENT_COMPLETED", "assessment", "HA-4", 4, {
        "title": "HIPAA security risk assessment", "result": "completed"}),
    _ev("b5", HEALTH, "RISK_STATUS_CHANGED", "risk", "HR-5", 5, {
        "title": "Ransomware on radiology imaging servers",
        "previousStatus": "open", "status": "accepted"}, action="STATUS_CHANGE"),
    _ev("b6", HEALTH, "CONTROL_TESTED", "control", "HC-6", 6, {
        "name": "Emergency generator failover test", "result": "passed"}, action="TEST"),
    _ev("b7", HEALTH, "POLICY_VIOLATION", "policy", "HPOL-7", 7, {
        "title": "Nurse opened a celebrity patient's chart without a treatment relationship",
        "description": "Unauthorized access to medical records detected by the privacy monitoring tool."},
        action="DETECT"),
    _ev("b8", HEALTH, "DATA_ANOMALY", "system", "ehr", 8, {
        "title": "Unusual bulk export of patient records by a single account"}, action="DETECT",
        source="BACKEND_API"),
    _ev("b9", HEALTH, "ASSESSMENT_OVERDUE", "assessment", "HA-9", 9, {
        "title": "Annual medication error reporting assessment", "description": "Overdue by two weeks."}),
    _ev("b10", HEALTH, "CONTROL_CREATED", "control", "HC-10", 10, {
        "name": "Automatic screen lock on nursing workstations after 5 minutes"}),
    _ev("b11", HEALTH, "RISK_UPDATED", "risk", "HR-11", 11, {
        "title": "Shortage of critical care antibiotics",
        "changes": {"impact": {"old": "moderate", "new": "severe"}}}, action="UPDATE"),
    _ev("b12", HEALTH, "COMPLIANCE_STATUS_CHANGED", "requirement", "CFR-11", 12, {
        "title": "FDA 21 CFR Part 11 electronic signatures",
        "previousStatus": "compliant", "status": "non-compliant"}, action="STATUS_CHANGE"),
    _ev("b13", HEALTH, "SYSTEM_PERFORMANCE", "system", "ehr", 13, {
        "message": "EHR response time above 3 seconds for 20 minutes"}, action="NOTIFY", source="BACKEND_API"),
    _ev("b14", HEALTH, "CONTROL_FAILED", "control", "HC-14", 14, {
        "name": "Nightly backup of electronic health records",
        "description": "Backups did not complete for three consecutive nights.", "status": "failed"},
        action="TEST"),
    _ev("b15", HEALTH, "RISK_CREATED", "risk", "HR-15", 15, {
        "title": "Staff susceptible to phishing",
        "description": "22 percent of staff clicked the link in the simulated phishing campaign."}),
    _ev("b16", HEALTH, "ASSESSMENT_STARTED", "assessment", "HA-16", 16, {
        "title": "Third-party risk assessment of the telehealth platform vendor"}),
    _ev("b17", HEALTH, "COMPLIANCE_GAP_DETECTED", "requirement", "HIPAA-BAA", 17, {
        "title": "Missing business associate agreement with cloud transcription service",
        "framework": "HIPAA"}, action="DETECT"),
    _ev("b18", HEALTH, "USER_ACTION", "audit-log", "export-18", 18, {
        "title": "Compliance officer exported the audit log for a regulator inquiry"},
        action="CREATE", source="FRONTEND_APP"),
]

# (tenant, query, eventId expected first)
QUERIES: list[tuple[str, str, str]] = [
    (BANK, "vendor access control failures", "evt-a2"),
    (BANK, "unencrypted credit card numbers in a database", "evt-a5"),
    (BANK, "wire transfer approved by the person who created it", "evt-a12"),
    (BANK, "overdue anti money laundering assessment", "evt-a4"),
    (BANK, "brute force login attempts from abroad", "evt-a14"),
    (BANK, "ransomware risk mitigated", "evt-a6"),
    (HEALTH, "patient data sent without encryption", "evt-b3"),
    (HEALTH, "employee snooping on patient medical records", "evt-b7"),
    (HEALTH, "health record backups failing", "evt-b14"),
    (HEALTH, "phishing simulation results", "evt-b15"),
]
