"""STAR next-action benchmark: STAR task schemas as sopagent policies, replayed turn by turn.

Modules: :mod:`.data` (tasks, dialogues, test cases), :mod:`.adapter` (schema -> Policy + Catalog),
:mod:`.gate` (allowed sets from the schema graph), :mod:`.runner` (replay with resume),
:mod:`.metrics`, :mod:`.baseline` (free-generation comparison), :mod:`.cli`.
"""
