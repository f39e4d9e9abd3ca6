"""The fork stage: the pinned upstream checkout, git mirrors, the fork definition and the patch engine.

Data flow: ``tei_fork/fork.toml`` + ``patches/series`` (:mod:`pytei.fork.definition`) ->
upstream commit fetched through the mirrors (:mod:`pytei.fork.upstream`,
:mod:`pytei.fork.mirrors`, :mod:`pytei.fork.git`) -> patched commit, applied all or nothing
(:mod:`pytei.fork.patching`).  Nothing here knows about cargo, profiles or routers.
"""
