"""The audit log: query, explain, export, verify, replay under another policy, erase and purge.

Everything here reads and writes the same store as the agent (:class:`sopagent.store.Store`);
the ``sopagent audit`` command (:mod:`sopagent.audit.cli`) is a thin layer over these modules.
"""

from sopagent.audit.query import AuditFilter, select_rows

__all__ = ["AuditFilter", "select_rows"]
