"""The audit store: tables, the hash chain, and the :class:`Store` that reads and appends."""

from sopagent.store.chain import ChainReport, policy_digest
from sopagent.store.store import RESOLVING_ACTIONS, Store, database_url
from sopagent.store.tables import (
                                   GENESIS_HASH,
                                   LANGUAGE_KEY,
                                   ChainHead,
                                   Conversation,
                                   Decision,
                                   FailedCheck,
                                   OperatorAction,
                                   OutboxEffect,
                                   PolicyVersion,
                                   RequestKey,
                                   utcnow,
)

__all__ = ["ChainHead", "ChainReport", "Conversation", "Decision", "FailedCheck", "GENESIS_HASH",
           "LANGUAGE_KEY", "OperatorAction",
           "OutboxEffect", "PolicyVersion", "RESOLVING_ACTIONS", "RequestKey", "Store", "database_url", "policy_digest",
           "utcnow"]
