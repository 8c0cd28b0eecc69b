"""``sopagent chat``: the command (:mod:`sopagent.chat.cli`) and what operators do, seen by the customer
(:mod:`sopagent.chat.watcher`)."""
