"""A labelled GRC search evaluation set (issue 18): 160 events of one tenant, a few look-alike events of
another tenant, and 64 questions asked the way a GRC analyst asks them, each with the event ids that
are relevant to it.

Written and labelled BEFORE any retrieval change was run against it (it is committed on its own,
ahead of the hybrid search work, so history shows the labels predate the results). Do not edit
labels to move a figure; a question found to be mislabelled is fixed in its own commit that says why.

Domains: third-party / vendor risk, cyber security, privacy (GDPR, DPIA, CCPA), SOX / ICFR, SOC 2,
ISO 27001, access reviews and identity, backups / DR / business continuity, change management, AI use
and model risk, AML / KYC, PCI DSS, people and policy, and a few others (ESG, physical, HIPAA).

Look-alikes on purpose: most tested controls appear twice, once failed and once passed (often the
same control on another date), so a question naming an outcome has a near-identical wrong answer.

Labelling rules:
* Relevant = what the analyst asking this question wants to see on the first screen.
* A question that names an outcome (failed, passed, overdue, violated, gap, missing ...) counts only
  events with that outcome: the passing test of a control is NOT relevant to "failed <control>".
* A question without an outcome counts every event on its topic that answers it.
* Each question has at most five relevant events.

Split: questions whose number is 1 or 3 modulo 5 are the tuning part (26); the rest (38) are held out.
Parameters may be tuned on the tuning part only; figures are reported for both parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

TENANT = "eval-grc"
OTHER_TENANT = "eval-other"  # look-alikes: a search in TENANT must never return them

_START = date(2026, 1, 5)


def _ev(eid: str, event_type: str, entity_type: str, entity_id: str, data: dict[str, Any], *,
        action: str = "CREATE", source: str = "ARCHER_GRC", tenant: str = TENANT) -> dict[str, Any]:
    n = sum(ord(c) for c in eid) % 170  # a stable spread of dates over the first half of 2026
    day = (_START + timedelta(days=n)).isoformat()
    return {
        "eventId": eid, "tenantId": tenant, "eventType": event_type, "source": source, "action": action,
        "entityType": entity_type, "entityId": entity_id, "data": data, "metadata": {},
        "timestamp": f"{day}T10:00:00.000Z", "ingestedAt": f"{day}T10:00:01.000Z", "schemaVersion": "1.0",
        "correlationId": f"c-{eid}",
    }


def _failed(eid: str, entity_id: str, name: str, description: str, **extra: Any) -> dict[str, Any]:
    return _ev(eid, "CONTROL_FAILED", "control", entity_id,
               {"name": name, "description": description, "status": "failed", **extra}, action="TEST")


def _tested(eid: str, entity_id: str, name: str, description: str, result: str = "passed",
            **extra: Any) -> dict[str, Any]:
    return _ev(eid, "CONTROL_TESTED", "control", entity_id,
               {"name": name, "description": description, "result": result, **extra}, action="TEST")


EVENTS: list[dict[str, Any]] = [
    # ---- third-party / vendor risk ---------------------------------------------------------------
    _failed("vnd-01", "TP-101", "Vendor security due diligence before onboarding",
            "Logistics supplier FreightCo was given VPN access to the warehouse system two weeks before its "
            "security questionnaire and due diligence review were completed.", owner="Procurement",
            vendor="FreightCo"),
    _tested("vnd-02", "TP-101", "Vendor security due diligence before onboarding",
            "Sample of 25 new suppliers onboarded in Q1: all completed the security questionnaire and risk "
            "tiering before contract signature.", owner="Procurement"),
    _ev("vnd-03", "RISK_CREATED", "risk", "TR-201", {
        "title": "Concentration risk on a single cloud hosting provider",
        "description": "All customer-facing workloads run in one region of one cloud provider; no exit plan exists.",
        "severity": "high", "category": "third-party"}),
    _ev("vnd-04", "ASSESSMENT_OVERDUE", "assessment", "TA-301", {
        "title": "Annual third-party risk reassessment of payroll provider PayServe",
        "description": "Reassessment was due 31 March and is 45 days late; the vendor has not returned the "
                       "questionnaire.", "vendor": "PayServe"}),
    _ev("vnd-05", "COMPLIANCE_GAP_DETECTED", "requirement", "TP-CON-7", {
        "title": "Supplier contracts lack a right-to-audit clause",
        "description": "12 of 40 critical supplier contracts have no right-to-audit or security breach "
                       "notification clause.", "framework": "Third-party risk policy"}, action="DETECT"),
    _ev("vnd-06", "ASSESSMENT_COMPLETED", "assessment", "TA-302", {
        "title": "Review of the data-center provider's SOC 2 Type II report",
        "description": "Report covers security and availability; two exceptions in change management; "
                       "complementary user entity controls mapped.", "result": "completed with 2 exceptions",
        "vendor": "ColoOne"}),
    _ev("vnd-07", "RISK_STATUS_CHANGED", "risk", "TR-202", {
        "title": "Financial instability of a critical software supplier",
        "description": "Supplier missed payroll; escrow of the source code requested.",
        "previousStatus": "open", "status": "escalated"}, action="STATUS_CHANGE"),
    _ev("vnd-08", "POLICY_VIOLATION", "policy", "POL-TPRM", {
        "title": "Business unit signed a SaaS contract without procurement review",
        "description": "Marketing bought an email platform on a corporate card, bypassing the vendor risk "
                       "assessment; customer emails are uploaded to it."}, action="DETECT"),
    _tested("vnd-09", "TP-110", "Vendor access removal at contract end",
            "All 9 suppliers whose contracts ended in Q2 had accounts and VPN tokens revoked within 24 hours."),
    _failed("vnd-10", "TP-110", "Vendor access removal at contract end",
            "Accounts of former consultancy BrightPath remained active 60 days after contract termination."),
    _ev("vnd-11", "DATA_ANOMALY", "system", "vendor-portal", {
        "title": "Unusual data download by a supplier account",
        "description": "A supplier portal account downloaded 4 GB of engineering drawings at night."},
        action="DETECT", source="BACKEND_API"),
    _ev("vnd-12", "ASSESSMENT_STARTED", "assessment", "TA-303", {
        "title": "Due diligence on a new AI transcription vendor",
        "description": "Security and privacy questionnaire sent; data processing agreement under negotiation."}),
    _ev("vnd-13", "RISK_UPDATED", "risk", "TR-203", {
        "title": "Fourth-party risk from subprocessors of the CRM provider",
        "description": "The CRM provider added two new subprocessors outside the EU.",
        "changes": {"likelihood": {"old": "low", "new": "medium"}}}, action="UPDATE"),
    _ev("vnd-14", "COMPLIANCE_STATUS_CHANGED", "requirement", "DORA-28", {
        "title": "DORA register of information on ICT third-party service providers",
        "description": "Register completed for all ICT providers supporting critical or important functions.",
        "previousStatus": "non-compliant", "status": "compliant"}, action="STATUS_CHANGE"),
    _ev("vnd-15", "CONTROL_UPDATED", "control", "TP-101", {
        "name": "Vendor security due diligence before onboarding",
        "changes": {"scope": {"old": "critical vendors", "new": "all vendors with data access"}}},
        action="UPDATE"),
    _ev("vnd-16", "SYSTEM_ERROR", "system", "vendor-risk-platform", {
        "message": "Nightly import of external vendor security ratings failed with an authentication error."},
        action="NOTIFY", source="BACKEND_API"),
    # ---- cyber security --------------------------------------------------------------------------
    _failed("cyb-01", "C-MFA-1", "Multi-factor authentication for remote access",
            "Test found 37 VPN accounts, including two administrators, able to log in with a password only."),
    _tested("cyb-02", "C-MFA-1", "Multi-factor authentication for remote access",
            "Second factor enforced for all 1,204 remote access accounts; no exceptions."),
    _ev("cyb-03", "RISK_CREATED", "risk", "CR-10", {
        "title": "Ransomware encrypting file servers",
        "description": "Flat network and unpatched file servers allow lateral movement; offline backups are "
                       "taken weekly only.", "severity": "critical"}),
    _failed("cyb-04", "C-PATCH-2", "Critical vulnerability patching within 14 days",
            "42 servers are missing critical patches older than 30 days, including an internet-facing VPN "
            "appliance."),
    _tested("cyb-05", "C-PATCH-2", "Critical vulnerability patching within 14 days",
            "All critical patches of the May cycle deployed within 9 days on average."),
    _ev("cyb-06", "ASSESSMENT_COMPLETED", "assessment", "CA-20", {
        "title": "External penetration test of the customer portal",
        "description": "SQL injection in the search form; weak session timeout.",
        "result": "completed with 1 high and 3 medium findings"}),
    _ev("cyb-07", "RISK_CREATED", "risk", "CR-11", {
        "title": "Staff falling for phishing emails",
        "description": "In the March simulation 18% of staff clicked the link and 6% entered their credentials."}),
    _tested("cyb-08", "C-PHISH", "Security awareness phishing simulation",
            "Click rate fell to 3%, below the 5% target."),
    _ev("cyb-09", "DATA_ANOMALY", "system", "siem", {
        "title": "Impossible travel sign-ins for a finance user",
        "description": "Logins from Lagos and London within 20 minutes; session token reuse suspected."},
        action="DETECT", source="BACKEND_API"),
    _ev("cyb-10", "COMPLIANCE_GAP_DETECTED", "requirement", "LOG-1", {
        "title": "Security logs of cloud workloads not sent to the SIEM",
        "description": "Audit logs of 14 cloud subscriptions are not forwarded; incidents there would go "
                       "undetected."}, action="DETECT"),
    _failed("cyb-11", "C-EDR", "Endpoint detection and response coverage",
            "The EDR agent is missing or not reporting on 11% of laptops."),
    _ev("cyb-12", "RISK_STATUS_CHANGED", "risk", "CR-3", {
        "title": "Remote desktop ports exposed to the internet",
        "description": "RDP closed at the firewall; access now goes through the bastion host.",
        "previousStatus": "open", "status": "mitigated"}, action="STATUS_CHANGE"),
    _failed("cyb-13", "C-FW", "Firewall rule base review",
            "Semi-annual review not evidenced; 220 any-any rules remain without an owner."),
    _tested("cyb-14", "C-FW", "Firewall rule base review",
            "Rules recertified by the network owners; 35 obsolete rules removed."),
    _ev("cyb-15", "SYSTEM_ERROR", "system", "cert-monitor", {
        "message": "TLS certificate of the payments API expired; partner calls failed for 3 hours."},
        action="NOTIFY", source="BACKEND_API"),
    _ev("cyb-16", "RISK_CREATED", "risk", "CR-12", {
        "title": "Distributed denial of service against online banking",
        "description": "No upstream DDoS scrubbing contract; peak capacity is 10 Gbps."}),
    _ev("cyb-17", "POLICY_VIOLATION", "policy", "POL-ACCEPT-USE", {
        "title": "USB mass storage used on a trading floor workstation",
        "description": "DLP blocked a copy of 2,000 client files to a personal USB stick."}, action="DETECT"),
    _ev("cyb-18", "ASSESSMENT_OVERDUE", "assessment", "CA-21", {
        "title": "Annual internal vulnerability assessment of the OT network",
        "description": "Scheduled for Q1 and not started; the plant network has not been scanned for 18 months."}),
    _ev("cyb-19", "CONTROL_CREATED", "control", "C-PAM", {
        "name": "Privileged access management vault for domain admins",
        "description": "Domain admin passwords are checked out from the vault with session recording.",
        "controlType": "preventive"}),
    _ev("cyb-20", "DATA_ANOMALY", "system", "edr", {
        "title": "Malware beaconing from a developer laptop",
        "description": "EDR flagged command-and-control traffic to a known Cobalt Strike server; host isolated."},
        action="DETECT", source="BACKEND_API"),
    # ---- privacy ---------------------------------------------------------------------------------
    _ev("prv-01", "ASSESSMENT_COMPLETED", "assessment", "PA-1", {
        "title": "Data protection impact assessment for the new customer loyalty app",
        "description": "Location tracking made opt-in; retention limited to 12 months.",
        "result": "completed, residual risk low", "framework": "GDPR"}),
    _ev("prv-02", "COMPLIANCE_GAP_DETECTED", "requirement", "GDPR-35", {
        "title": "No impact assessment before launching employee monitoring",
        "description": "Keystroke and screen monitoring rolled out to call-centre staff without a DPIA or works "
                       "council consultation.", "framework": "GDPR"}, action="DETECT"),
    _ev("prv-03", "ASSESSMENT_OVERDUE", "assessment", "PA-2", {
        "title": "Data subject access request response",
        "description": "A customer's request for a copy of their personal data is 41 days old; the one-month "
                       "deadline has passed.", "framework": "GDPR"}),
    _tested("prv-04", "PC-3", "Subject access requests answered within one month",
            "All 58 requests of Q1 answered in 19 days on average."),
    _ev("prv-05", "POLICY_VIOLATION", "policy", "POL-PRIV", {
        "title": "Marketing emails sent to customers who withdrew consent",
        "description": "A campaign list was built from an old export and ignored 3,400 opt-outs."},
        action="DETECT"),
    _failed("prv-06", "PC-4", "Personal data breach notification within 72 hours",
            "A lost laptop with unencrypted HR files was reported to the supervisory authority after 6 days.",
            framework="GDPR"),
    _tested("prv-07", "PC-4", "Personal data breach notification within 72 hours",
            "Tabletop exercise: breach triaged, DPO informed and the regulator notification drafted in 30 hours."),
    _ev("prv-08", "COMPLIANCE_GAP_DETECTED", "requirement", "GDPR-30", {
        "title": "Record of processing activities out of date",
        "description": "The RoPA does not list the new HR analytics and call recording processing."},
        action="DETECT"),
    _ev("prv-09", "RISK_CREATED", "risk", "PR-5", {
        "title": "International transfers to a US analytics provider without safeguards",
        "description": "Customer behaviour data flows to the US without standard contractual clauses or a "
                       "transfer impact assessment."}),
    _failed("prv-10", "PC-6", "Automated deletion of personal data after the retention period",
            "The purge job has not deleted closed customer accounts older than 7 years since January."),
    _ev("prv-11", "ASSESSMENT_STARTED", "assessment", "PA-3", {
        "title": "DPIA for facial recognition at office entrances",
        "description": "Biometric access control proposed by facilities; legal basis under review."}),
    _ev("prv-12", "COMPLIANCE_STATUS_CHANGED", "requirement", "CCPA-1", {
        "title": "California consumer opt-out of sale (CCPA)",
        "description": "Do Not Sell or Share link and the global privacy control signal are now honoured.",
        "previousStatus": "non-compliant", "status": "compliant"}, action="STATUS_CHANGE"),
    _ev("prv-13", "POLICY_VIOLATION", "policy", "POL-PRIV", {
        "title": "Cookie banner sets tracking cookies before consent",
        "description": "A web scan found advertising cookies dropped before the user accepts.",
        "framework": "ePrivacy"}, action="DETECT"),
    _ev("prv-14", "USER_ACTION", "audit-log", "ual-14", {
        "title": "Data protection officer approved the privacy notice update"}, action="UPDATE",
        source="FRONTEND_APP"),
    _ev("prv-15", "DATA_ANOMALY", "system", "crm", {
        "title": "Bulk export of customer personal data by a sales user",
        "description": "Export of 120,000 customer records with dates of birth to a spreadsheet."},
        action="DETECT", source="BACKEND_API"),
    _ev("prv-16", "RISK_UPDATED", "risk", "PR-6", {
        "title": "Children's data collected by the gaming app",
        "description": "No age verification before sign-up.",
        "changes": {"impact": {"old": "medium", "new": "high"}}}, action="UPDATE"),
    # ---- SOX / ICFR ------------------------------------------------------------------------------
    _failed("sox-01", "SOX-JE-1", "Manual journal entry review and approval",
            "Q2 test: 6 of 40 manual journal entries above $250k were posted without independent approval.",
            framework="SOX"),
    _tested("sox-02", "SOX-JE-1", "Manual journal entry review and approval",
            "Q1 test: 40 of 40 sampled manual journal entries were approved by a second preparer before posting.",
            framework="SOX"),
    _failed("sox-03", "SOX-SOD-3", "Segregation of duties in the ERP purchase-to-pay process",
            "Five buyers can create vendors and approve purchase orders and payments in SAP."),
    _ev("sox-04", "COMPLIANCE_STATUS_CHANGED", "requirement", "SOX-404", {
        "title": "Internal control over financial reporting: revenue cycle",
        "description": "Unremediated revenue cut-off errors aggregated to a material weakness.",
        "previousStatus": "significant deficiency", "status": "material weakness"}, action="STATUS_CHANGE"),
    _tested("sox-05", "SOX-ITGC-2", "ITGC: user access review for the general ledger",
            "Quarterly review of Oracle GL access completed by the owners; 4 removals processed."),
    _failed("sox-06", "SOX-ITGC-2", "ITGC: user access review for the general ledger",
            "Q3 review signed off without evidence; two leavers still had posting rights."),
    _ev("sox-07", "ASSESSMENT_OVERDUE", "assessment", "SA-1", {
        "title": "Quarter-end balance sheet account reconciliations",
        "description": "23 reconciliations for the June close not completed 15 days after the deadline."}),
    _ev("sox-08", "ASSESSMENT_COMPLETED", "assessment", "SA-2", {
        "title": "SOX 404 walkthrough of the inventory valuation process", "result": "completed, design effective"}),
    _failed("sox-09", "SOX-CHG-1", "ITGC: program change approval for the billing system",
            "3 of 25 changes to the billing system moved to production without business approval."),
    _ev("sox-10", "RISK_CREATED", "risk", "SR-1", {
        "title": "Management override of controls in revenue recognition",
        "description": "Regional sales heads can change contract terms after booking.",
        "category": "financial reporting"}),
    _ev("sox-11", "CONTROL_UPDATED", "control", "SOX-REV-4", {
        "name": "Revenue cut-off review at quarter end",
        "changes": {"owner": {"old": "Regional controller", "new": "Group revenue accounting"}}}, action="UPDATE"),
    _ev("sox-12", "COMPLIANCE_GAP_DETECTED", "requirement", "SOX-302", {
        "title": "Sub-certifications from regional CFOs missing",
        "description": "Two regions did not return the quarterly sub-certifications supporting the CEO and CFO "
                       "certification."}, action="DETECT"),
    _tested("sox-13", "SOX-TAX-1", "Income tax provision review",
            "The tax provision was reviewed by the tax director and reconciled to the returns."),
    _ev("sox-14", "ASSESSMENT_STARTED", "assessment", "SA-3", {
        "title": "SOX scoping and risk assessment for the new fiscal year",
        "description": "Materiality set; significant accounts and locations being scoped."}),
    # ---- SOC 2 -----------------------------------------------------------------------------------
    _ev("soc-01", "ASSESSMENT_STARTED", "assessment", "SC-1", {
        "title": "SOC 2 Type II audit fieldwork for the SaaS platform",
        "description": "The auditor began testing the security, availability and confidentiality criteria for "
                       "the 12-month period.", "framework": "SOC 2"}),
    _ev("soc-02", "ASSESSMENT_COMPLETED", "assessment", "SC-2", {
        "title": "SOC 2 readiness assessment",
        "description": "Gaps in vendor management, risk assessment and incident response testing.",
        "result": "completed, 8 gaps", "framework": "SOC 2"}),
    _failed("soc-03", "SC-CC8", "Change approval before deployment (CC8.1)",
            "Auditor noted an exception: 4 of 60 production deployments had no approved ticket.",
            framework="SOC 2"),
    _tested("soc-04", "SC-CC6", "Logical access provisioning (CC6.2)",
            "New user access requests in the sample all had manager approval.", framework="SOC 2"),
    _ev("soc-05", "COMPLIANCE_STATUS_CHANGED", "requirement", "SC-RPT", {
        "title": "SOC 2 Type II report issued",
        "description": "Opinion qualified for the availability criterion because of backup monitoring exceptions.",
        "previousStatus": "in progress", "status": "qualified opinion"}, action="STATUS_CHANGE"),
    _ev("soc-06", "COMPLIANCE_GAP_DETECTED", "requirement", "SC-GAP-1", {
        "title": "No annual risk assessment documented for SOC 2 (CC3.2)",
        "description": "The trust services criteria require a documented risk assessment; the last one is "
                       "20 months old.", "framework": "SOC 2"}, action="DETECT"),
    _failed("soc-07", "SC-A1", "Availability monitoring and capacity alerts (A1.2)",
            "Capacity alerts were disabled for two months; the outage on 3 May was not detected by monitoring.",
            framework="SOC 2"),
    _ev("soc-08", "USER_ACTION", "audit-log", "ual-08", {
        "title": "Customer downloaded the bridge letter covering the SOC 2 gap period"}, source="FRONTEND_APP"),
    _ev("soc-09", "RISK_CREATED", "risk", "SCR-1", {
        "title": "Customers may churn if the SOC 2 report is late",
        "description": "Three enterprise renewals depend on receiving the service organisation controls report "
                       "by September."}),
    _tested("soc-10", "SC-CC7", "Incident response procedures (CC7.4)",
            "Security incident response drill completed; post-incident review documented.", framework="SOC 2"),
    _ev("soc-11", "ASSESSMENT_OVERDUE", "assessment", "SC-3", {
        "title": "Review of subservice organisation SOC 2 reports",
        "description": "The SOC 2 reports of the cloud host and the payment processor have not been reviewed "
                       "this year."}),
    # ---- ISO 27001 -------------------------------------------------------------------------------
    _ev("iso-01", "ASSESSMENT_COMPLETED", "assessment", "IS-1", {
        "title": "ISO 27001 surveillance audit",
        "description": "Major nonconformity: the risk treatment plan for supplier security was not implemented.",
        "result": "completed, 1 major and 3 minor nonconformities", "framework": "ISO 27001"}),
    _ev("iso-02", "COMPLIANCE_GAP_DETECTED", "requirement", "ISO-A5.9", {
        "title": "Information asset inventory incomplete (Annex A 5.9)",
        "description": "Cloud databases and SaaS tools are missing from the asset register; no owners assigned.",
        "framework": "ISO 27001"}, action="DETECT"),
    _ev("iso-03", "ASSESSMENT_OVERDUE", "assessment", "IS-2", {
        "title": "ISMS internal audit programme",
        "description": "The internal audit of the information security management system planned for Q1 was "
                       "not performed.", "framework": "ISO 27001"}),
    _ev("iso-04", "COMPLIANCE_STATUS_CHANGED", "requirement", "ISO-CERT", {
        "title": "ISO/IEC 27001:2022 certification",
        "description": "Transition to the 2022 version completed; certificate valid for three years.",
        "previousStatus": "in transition", "status": "certified"}, action="STATUS_CHANGE"),
    _failed("iso-05", "ISO-A8.13", "Information backup (Annex A 8.13)",
            "The auditor found the backups of the document management system untested for 14 months.",
            framework="ISO 27001"),
    _tested("iso-06", "ISO-A5.15", "Access control policy review (Annex A 5.15)",
            "Policy reviewed and approved by the CISO; exceptions register up to date.", framework="ISO 27001"),
    _ev("iso-07", "ASSESSMENT_STARTED", "assessment", "IS-3", {
        "title": "Management review of the ISMS",
        "description": "Annual management review meeting: objectives, audit results, risk register."}),
    _ev("iso-08", "CONTROL_UPDATED", "control", "ISO-SOA", {
        "name": "Statement of Applicability",
        "description": "Two Annex A controls excluded with a justification.",
        "changes": {"controls in scope": {"old": "93", "new": "91"}}}, action="UPDATE"),
    _ev("iso-09", "RISK_STATUS_CHANGED", "risk", "IR-1", {
        "title": "Risk treatment for unencrypted laptops",
        "description": "Full disk encryption deployed to all laptops; risk closed in the ISMS risk register.",
        "previousStatus": "open", "status": "closed"}, action="STATUS_CHANGE"),
    _ev("iso-10", "POLICY_VIOLATION", "policy", "POL-ISMS", {
        "title": "Visitor left unescorted in the server room",
        "description": "The visitor badge log shows a contractor unescorted in the data centre for 2 hours."},
        action="DETECT"),
    # ---- access reviews and identity -------------------------------------------------------------
    _failed("acc-01", "AC-1", "Quarterly user access recertification for finance applications",
            "Managers approved 100% of access without changes; internal audit later found 17 inappropriate "
            "entitlements."),
    _tested("acc-02", "AC-1", "Quarterly user access recertification for finance applications",
            "Q1 recertification complete; 42 entitlements revoked on time."),
    _failed("acc-03", "AC-2", "Leaver account disablement within 24 hours",
            "The HR termination feed broke: 23 leavers kept active Active Directory accounts for up to 3 weeks."),
    _tested("acc-04", "AC-2", "Leaver account disablement within 24 hours",
            "All 31 leavers of April were disabled the same day."),
    _ev("acc-05", "COMPLIANCE_GAP_DETECTED", "requirement", "AC-GAP-1", {
        "title": "Service accounts without an owner",
        "description": "148 service accounts in Active Directory have no named owner and passwords that never "
                       "expire."}, action="DETECT"),
    _ev("acc-06", "ASSESSMENT_OVERDUE", "assessment", "AA-1", {
        "title": "Privileged access review of production databases",
        "description": "The semi-annual review of DBA and root access is 2 months overdue."}),
    _ev("acc-07", "POLICY_VIOLATION", "policy", "POL-IAM", {
        "title": "Shared administrator account used by the network team",
        "description": "One admin login is used by six engineers; actions cannot be attributed."}, action="DETECT"),
    _ev("acc-08", "RISK_CREATED", "risk", "AR-1", {
        "title": "Excessive access after internal job moves",
        "description": "Movers keep the entitlements of their previous roles; there is no mover process in the "
                       "identity system."}),
    _ev("acc-09", "DATA_ANOMALY", "system", "iam", {
        "title": "Dormant administrator account suddenly active",
        "description": "A domain admin account unused for 200 days logged in at 03:00."},
        action="DETECT", source="BACKEND_API"),
    _ev("acc-10", "CONTROL_CREATED", "control", "AC-3", {
        "name": "Automated joiner-mover-leaver provisioning from the HR system",
        "description": "Access is granted and removed automatically from Workday events.",
        "controlType": "preventive"}),
    _ev("acc-11", "ASSESSMENT_COMPLETED", "assessment", "AA-2", {
        "title": "Role-based access control design review for the core banking platform",
        "result": "completed, 12 toxic role combinations identified"}),
    _failed("acc-12", "AC-4", "Access request approval by the application owner",
            "The help desk granted access to the HR system on verbal requests without owner approval."),
    # ---- backups, disaster recovery, business continuity -----------------------------------------
    _tested("bdr-01", "BC-1", "Quarterly restore test of the customer database backup",
            "Full restore completed in 2 hours; data verified against checksums."),
    _failed("bdr-02", "BC-1", "Quarterly restore test of the customer database backup",
            "Restore failed: backup files corrupted since a storage migration; the last good copy is 9 days old."),
    _ev("bdr-03", "ASSESSMENT_COMPLETED", "assessment", "BA-1", {
        "title": "Disaster recovery failover exercise for the payments platform",
        "description": "Failover to the secondary site took 9 hours against a 4-hour RTO; 40 minutes of data "
                       "lost against a 15-minute RPO.", "result": "completed, recovery time objective missed"}),
    _ev("bdr-04", "SYSTEM_ERROR", "system", "backup-service", {
        "message": "Backup job ERP-FULL failed for the ERP database: insufficient space on the backup vault."},
        action="NOTIFY", source="BACKEND_API"),
    _ev("bdr-05", "ASSESSMENT_OVERDUE", "assessment", "BA-2", {
        "title": "Business continuity plan annual review",
        "description": "The BCP of the contact centre has not been reviewed since 2024; its owner left the "
                       "company."}),
    _ev("bdr-06", "ASSESSMENT_COMPLETED", "assessment", "BA-3", {
        "title": "Business impact analysis for treasury operations",
        "description": "Maximum tolerable downtime 4 hours; RTO of 2 hours and RPO of 15 minutes agreed.",
        "result": "completed"}),
    _ev("bdr-07", "RISK_CREATED", "risk", "BR-1", {
        "title": "Backups reachable by ransomware",
        "description": "The backup server is joined to the production domain; there is no immutable or offline "
                       "copy."}),
    _ev("bdr-08", "CONTROL_CREATED", "control", "BC-2", {
        "name": "Immutable backup copies with a 30-day retention lock", "controlType": "preventive"}),
    _tested("bdr-09", "BC-3", "Disaster recovery test of the email service",
            "Failover achieved in 35 minutes, within the 1-hour recovery time objective."),
    _ev("bdr-10", "ASSESSMENT_STARTED", "assessment", "BA-4", {
        "title": "Crisis management tabletop exercise",
        "description": "Scenario: a regional power outage affecting both data centres."}),
    _ev("bdr-11", "COMPLIANCE_GAP_DETECTED", "requirement", "BC-GAP-1", {
        "title": "No recovery plan for the cloud HR system",
        "description": "The SaaS HR system is tier 1 but has no documented recovery procedure or recovery time "
                       "objective."}, action="DETECT"),
    _ev("bdr-12", "RISK_STATUS_CHANGED", "risk", "BR-2", {
        "title": "Single data centre for core systems",
        "description": "Secondary site commissioned and replication enabled.",
        "previousStatus": "open", "status": "mitigated"}, action="STATUS_CHANGE"),
    _ev("bdr-13", "SYSTEM_PERFORMANCE", "system", "backup-service", {
        "message": "The full backup took 11 hours and overran into business hours."},
        action="NOTIFY", source="BACKEND_API"),
    # ---- change management -----------------------------------------------------------------------
    _ev("chg-01", "POLICY_VIOLATION", "policy", "POL-CHG", {
        "title": "Code pushed to production without change approval",
        "description": "A developer deployed a hotfix to the trading platform directly from a laptop, bypassing "
                       "the pipeline and the change advisory board."}, action="DETECT"),
    _tested("chg-02", "CM-1", "Change advisory board approval of normal changes",
            "All 50 sampled changes were approved by the CAB with test evidence and a rollback plan."),
    _failed("chg-03", "CM-1", "Change advisory board approval of normal changes",
            "8 of 50 changes were implemented before CAB approval; approvals were back-dated."),
    _failed("chg-04", "CM-2", "Emergency change retrospective review",
            "Emergency changes of May were not reviewed within 5 days; 3 have no post-implementation review."),
    _ev("chg-05", "DATA_ANOMALY", "system", "cmdb", {
        "title": "Unauthorised configuration change detected on core switches",
        "description": "Configuration drift found on 4 core switches with no matching change ticket."},
        action="DETECT", source="BACKEND_API"),
    _ev("chg-06", "SYSTEM_ERROR", "system", "deploy-pipeline", {
        "message": "Automatic rollback of release 5.2 failed; the manual restore of the previous version took "
                   "2 hours."}, action="NOTIFY", source="BACKEND_API"),
    _tested("chg-07", "CM-3", "Segregation between developers and production deployment",
            "Developers have no production deploy rights; deployments run only through the pipeline service "
            "account."),
    _ev("chg-08", "RISK_CREATED", "risk", "CHR-1", {
        "title": "Uncontrolled changes to end-user computing spreadsheets",
        "description": "Pricing spreadsheets are changed without version control or review."}),
    _ev("chg-09", "COMPLIANCE_GAP_DETECTED", "requirement", "CM-GAP-1", {
        "title": "Change records lack test evidence",
        "description": "30% of change tickets have no attached test results or user acceptance sign-off."},
        action="DETECT"),
    _ev("chg-10", "CONTROL_UPDATED", "control", "CM-1", {
        "name": "Change advisory board approval of normal changes",
        "changes": {"meeting frequency": {"old": "weekly", "new": "twice weekly"}}}, action="UPDATE"),
    _ev("chg-11", "ASSESSMENT_COMPLETED", "assessment", "CA-CM", {
        "title": "Internal audit of the release management process",
        "description": "Release sign-off by the product owner was missing for two releases.",
        "result": "completed, 2 medium findings"}),
    _failed("chg-12", "CM-4", "Production release sign-off by the business owner",
            "Mobile app version 7.3 went live without business owner sign-off or user acceptance testing."),
    # ---- AI use and model risk -------------------------------------------------------------------
    _ev("ai-01", "POLICY_VIOLATION", "policy", "POL-AI", {
        "title": "Staff pasted customer contracts into a public generative AI chatbot",
        "description": "Proxy logs show 46 uploads of confidential documents to a consumer ChatGPT-style "
                       "assistant."}, action="DETECT"),
    _ev("ai-02", "CONTROL_CREATED", "control", "AIC-1", {
        "name": "Generative AI acceptable use policy and approved tools list",
        "description": "Only the enterprise Copilot tenant may process internal data.", "controlType": "directive"}),
    _ev("ai-03", "COMPLIANCE_GAP_DETECTED", "requirement", "AI-GAP-1", {
        "title": "No inventory of AI models in production",
        "description": "The model inventory required by the AI governance framework does not exist; at least "
                       "14 models are in use."}, action="DETECT"),
    _ev("ai-04", "ASSESSMENT_STARTED", "assessment", "AIA-1", {
        "title": "EU AI Act risk classification of the CV screening model",
        "description": "The recruitment model is likely high-risk under Annex III; a conformity assessment is "
                       "planned.", "framework": "EU AI Act"}),
    _failed("ai-05", "AIC-2", "Bias and fairness testing of the credit decision model",
            "Approval rates for applicants over 60 were 22 points lower; the disparate impact threshold was "
            "breached."),
    _tested("ai-06", "AIC-2", "Bias and fairness testing of the credit decision model",
            "Retest after retraining: disparate impact ratio 0.93, within tolerance."),
    _ev("ai-07", "DATA_ANOMALY", "system", "proxy", {
        "title": "Spike in traffic to unapproved AI services",
        "description": "Shadow AI: 300 employees used unsanctioned AI writing tools this week."},
        action="DETECT", source="BACKEND_API"),
    _ev("ai-08", "RISK_CREATED", "risk", "AIR-1", {
        "title": "Support chatbot gives customers wrong fee information",
        "description": "Hallucinated answers from the LLM-based support assistant are sent without human review."}),
    _ev("ai-09", "ASSESSMENT_OVERDUE", "assessment", "AIA-2", {
        "title": "Independent validation of the fraud detection machine learning model",
        "description": "The model risk validation due in February is not complete; the model was retrained "
                       "twice since."}),
    _ev("ai-10", "ASSESSMENT_COMPLETED", "assessment", "AIA-3", {
        "title": "Security and privacy review of the enterprise LLM vendor",
        "description": "Prompts are not used for training; data residency in the EU confirmed.",
        "result": "completed, approved with conditions"}),
    _ev("ai-11", "RISK_UPDATED", "risk", "AIR-2", {
        "title": "Model drift in the anti-fraud model",
        "description": "The false negative rate doubled since launch.",
        "changes": {"likelihood": {"old": "low", "new": "high"}}}, action="UPDATE"),
    _tested("ai-12", "AIC-3", "Human review of AI-generated customer letters",
            "Sample of 100 letters: all were reviewed by an agent before sending."),
    # ---- AML / KYC -------------------------------------------------------------------------------
    _failed("aml-01", "AML-1", "Know your customer refresh for high-risk clients",
            "312 high-risk client files are past their review date; enhanced due diligence is missing."),
    _tested("aml-02", "AML-2", "Sanctions screening of payments",
            "Test payments to listed entities were all stopped by the screening engine."),
    _ev("aml-03", "SYSTEM_ERROR", "system", "sanctions", {
        "message": "Daily OFAC and EU sanctions list download failed; screening ran on a 3-day-old list."},
        action="NOTIFY", source="BACKEND_API"),
    _ev("aml-04", "ASSESSMENT_OVERDUE", "assessment", "AMA-1", {
        "title": "Enterprise-wide money laundering risk assessment",
        "description": "The annual AML risk assessment due in January is still in draft."}),
    _ev("aml-05", "DATA_ANOMALY", "system", "txn-monitoring", {
        "title": "Structured cash deposits just below the reporting threshold",
        "description": "A customer made 14 deposits of 9,500 over two weeks across branches."},
        action="DETECT", source="BACKEND_API"),
    _ev("aml-06", "COMPLIANCE_GAP_DETECTED", "requirement", "AML-GAP", {
        "title": "Suspicious activity reports filed late",
        "description": "9 SARs were filed more than 30 days after detection."}, action="DETECT"),
    # ---- PCI DSS ---------------------------------------------------------------------------------
    _ev("pci-01", "COMPLIANCE_GAP_DETECTED", "requirement", "PCI-3", {
        "title": "Card numbers stored unencrypted in application logs",
        "description": "Full PANs are written to the debug logs of the checkout service.",
        "framework": "PCI DSS"}, action="DETECT"),
    _tested("pci-02", "PCI-11", "Quarterly external vulnerability scan by an approved scanning vendor",
            "ASV scan passed with no failing vulnerabilities.", framework="PCI DSS"),
    _failed("pci-03", "PCI-11", "Quarterly external vulnerability scan by an approved scanning vendor",
            "Q2 ASV scan failed: outdated TLS 1.0 on the payment page.", framework="PCI DSS"),
    _ev("pci-04", "ASSESSMENT_COMPLETED", "assessment", "PCA-1", {
        "title": "PCI DSS report on compliance",
        "description": "The QSA issued the ROC and attestation of compliance for version 4.0.",
        "result": "completed, compliant"}),
    # ---- people and policy -----------------------------------------------------------------------
    _ev("pol-01", "ASSESSMENT_OVERDUE", "assessment", "PT-1", {
        "title": "Annual security awareness training completion",
        "description": "27% of staff have not completed the mandatory training due 30 April."}),
    _tested("pol-02", "PT-2", "Code of conduct attestation", "98% of employees attested by the deadline."),
    _ev("pol-03", "POLICY_VIOLATION", "policy", "POL-GIFT", {
        "title": "Gift from a supplier not declared",
        "description": "A procurement manager accepted hospitality worth 3,000 from a bidder."}, action="DETECT"),
    _ev("pol-04", "POLICY_VIOLATION", "policy", "POL-CLEAN", {
        "title": "Confidential documents left on printers",
        "description": "A clean desk sweep found payroll printouts at shared printers."}, action="DETECT"),
    _failed("pol-05", "PT-3", "Background screening before hire",
            "12 contractors started work before their criminal record checks came back."),
    _ev("pol-06", "COMPLIANCE_STATUS_CHANGED", "requirement", "POL-REV", {
        "title": "Information security policy annual approval",
        "description": "The board approved the revised information security policy.",
        "previousStatus": "expired", "status": "approved"}, action="STATUS_CHANGE"),
    # ---- other -----------------------------------------------------------------------------------
    _ev("oth-01", "RISK_CREATED", "risk", "OR-1", {
        "title": "Flooding of the ground-floor server room",
        "description": "The server room is below river flood level and has no water detection."}),
    _failed("oth-02", "PS-1", "Data centre badge access review",
            "Badges of 15 former employees still open the data centre door."),
    _ev("oth-03", "SYSTEM_PERFORMANCE", "system", "grc-platform", {
        "message": "Risk register export took 95 seconds."}, action="NOTIFY", source="BACKEND_API"),
    _ev("oth-04", "USER_ACTION", "audit-log", "ual-04", {
        "title": "Auditor exported the control test evidence for Q2"}, source="FRONTEND_APP"),
    _ev("oth-05", "RISK_CREATED", "risk", "OR-2", {
        "title": "Greenhouse gas emissions data not assured",
        "description": "Scope 3 emissions in the sustainability report are estimates without limited assurance.",
        "category": "ESG"}),
    _ev("oth-06", "COMPLIANCE_GAP_DETECTED", "requirement", "HIPAA-1", {
        "title": "Business associate agreement missing for a medical transcription vendor",
        "framework": "HIPAA"}, action="DETECT"),
    _ev("oth-07", "RISK_DELETED", "risk", "OR-3", {
        "title": "Legacy mainframe end of support", "reason": "Mainframe decommissioned in March."},
        action="DELETE"),
    _ev("oth-08", "ASSESSMENT_COMPLETED", "assessment", "OA-1", {
        "title": "Insurance coverage review for cyber incidents",
        "description": "The cyber insurance policy limit was raised to 20 million.", "result": "completed"}),
]

# Another tenant's look-alikes of some of the events above: never a hit of a search in TENANT.
OTHER_EVENTS: list[dict[str, Any]] = [
    _ev("x-" + e["eventId"], e["eventType"], e["entityType"], e["entityId"], e["data"],
        action=e["action"], source=e["source"], tenant=OTHER_TENANT)
    for e in EVENTS if e["eventId"] in {
        "cyb-01", "bdr-02", "soc-03", "prv-02", "ai-01", "sox-03", "acc-03", "chg-01", "aml-01", "bdr-03",
        "vnd-01", "sox-01"}
]


@dataclass(frozen=True)
class Question:
    qid: int
    text: str
    relevant: tuple[str, ...]

    @property
    def split(self) -> str:
        return "tune" if self.qid % 5 in (1, 3) else "holdout"


def _q(qid: int, text: str, *relevant: str) -> Question:
    return Question(qid, text, relevant)


QUESTIONS: list[Question] = [
    _q(1, "which suppliers got system access before security vetting was finished", "vnd-01"),
    _q(2, "failed MFA checks on VPN accounts", "cyb-01"),
    _q(3, "SoD failures in SAP", "sox-03"),
    _q(4, "SOX ITGC general ledger access recertification that passed", "sox-05"),
    _q(5, "overdue DSARs", "prv-03"),
    _q(6, "DPIA missing before a rollout", "prv-02"),
    _q(7, "SOC 2 exceptions on change approvals", "soc-03", "vnd-06"),
    _q(8, "backup restore that did not work", "bdr-02"),
    _q(9, "did we miss the RTO or RPO in a DR test", "bdr-03"),
    _q(10, "staff putting confidential data into ChatGPT-like tools", "ai-01"),
    _q(11, "releases that went live without business sign-off", "chg-12", "chg-11", "sox-09"),
    _q(12, "production deployments that bypassed change approval", "chg-01", "chg-03", "soc-03", "sox-09"),
    _q(13, "passed SOX testing of journal entry approvals", "sox-02"),
    _q(14, "failed JE approval control", "sox-01"),
    _q(15, "material weakness in ICFR", "sox-04"),
    _q(16, "ISO 27001 audit nonconformities", "iso-01", "iso-05"),
    _q(17, "ISMS internal audit running late", "iso-03"),
    _q(18, "terminated employees who still have active access", "acc-03", "oth-02", "sox-06"),
    _q(19, "service accounts nobody owns", "acc-05"),
    _q(20, "overdue PAM review for database admins", "acc-06"),
    _q(21, "admins sharing one login", "acc-07"),
    _q(22, "KYC refresh failing for high risk customers", "aml-01"),
    _q(23, "problems with sanctions screening lists", "aml-03"),
    _q(24, "late SAR filings", "aml-06"),
    _q(25, "failed PCI ASV scan", "pci-03"),
    _q(26, "credit card numbers showing up in logs", "pci-01"),
    _q(27, "third-party contracts missing audit rights", "vnd-05"),
    _q(28, "overdue TPRM reassessment", "vnd-04"),
    _q(29, "GDPR breach not reported within 72 hours", "prv-06"),
    _q(30, "customers emailed after they opted out", "prv-05"),
    _q(31, "ROPA not up to date", "prv-08"),
    _q(32, "personal data going to the US without SCCs", "prv-09"),
    _q(33, "SOC 2 report with a qualified opinion", "soc-05"),
    _q(34, "where are we with the SOC 2 Type 2 audit", "soc-01", "soc-05"),
    _q(35, "EU AI Act high-risk classification", "ai-04"),
    _q(36, "AI fairness test failed", "ai-05"),
    _q(37, "gap: no AI model inventory", "ai-03"),
    _q(38, "ML model validation overdue", "ai-09"),
    _q(39, "phishing simulation click rates", "cyb-07", "cyb-08"),
    _q(40, "critical vulns not patched in time", "cyb-04"),
    _q(41, "EDR agent coverage failing", "cyb-11"),
    _q(42, "cloud logs not reaching the SIEM", "cyb-10"),
    _q(43, "outage from an expired certificate", "cyb-15"),
    _q(44, "firewall rule review failed", "cyb-13"),
    _q(45, "BCP review overdue", "bdr-05"),
    _q(46, "BIA results for treasury", "bdr-06"),
    _q(47, "are our backups exposed to ransomware", "bdr-07"),
    _q(48, "CAB approval testing passed", "chg-02"),
    _q(49, "emergency changes never reviewed afterwards", "chg-04"),
    _q(50, "unauthorised config changes on network devices", "chg-05"),
    _q(51, "mandatory security training overdue", "pol-01"),
    _q(52, "people starting work before background checks", "pol-05"),
    _q(53, "supplier gifts not declared", "pol-03"),
    _q(54, "HIPAA BAA missing", "oth-06"),
    _q(55, "supplier pulling a lot of data from our portal", "vnd-11"),
    _q(56, "SaaS bought without TPRM review", "vnd-08"),
    _q(57, "DORA ICT third-party register", "vnd-14"),
    _q(58, "old admin account suddenly logging in", "acc-09"),
    _q(59, "access creep when people change roles", "acc-08"),
    _q(60, "access recertification that was rubber-stamped", "acc-01"),
    _q(61, "SOX 302 sub-certifications missing", "sox-12"),
    _q(62, "quarter-end reconciliations late", "sox-07"),
    _q(63, "DR tests that passed", "bdr-09"),
    _q(64, "which controls failed in the SOC 2 audit", "soc-03", "soc-07"),
]
