"""Where oneoff keeps runs, releases, approvals, locks and the audit log."""
