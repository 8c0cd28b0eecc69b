"""The console's screens: conversation list, one conversation, approvals, audit, try a policy, dialogs."""
